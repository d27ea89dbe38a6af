package egress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"meshwork.dev/workspace/wsnet"
)

// Names of Verify's checks, as a CheckError carries them.
const (
	CheckConnectivity = "connectivity" // the echo service answers from inside the workspace
	CheckExitIP       = "exit-ip"      // the echo saw the exit's public address
	CheckDNS          = "dns"          // the DNS logger saw the query, from the exit only
)

// A CheckError is a failed check of Verify: Check names it, Err says why.
type CheckError struct {
	Check string
	Err   error
}

func (e *CheckError) Error() string { return "egress check " + e.Check + " failed: " + e.Err.Error() }

func (e *CheckError) Unwrap() error { return e.Err }

// Verification says where Verify looks. Everything is reached from inside the workspace's
// namespace, as the workspace's programs would, names resolved by Resolver.
//
// The DNS logger's protocol: it is authoritative for DNSZone and notes the source address of
// every query; GET DNSLogURL?name=NAME answers 200 with the addresses that asked for NAME, one
// a line, as text (none: an empty body).
type Verification struct {
	EchoURL   string         // GET answers with the caller's address, as text (ifconfig.me)
	ExitIP    netip.Addr     // what the echo must see; invalid: whatever it sees, DNS must match it
	Resolver  netip.AddrPort // the workspace's resolver (the exit's DNS); port 0 means 53
	DNSZone   string         // a zone whose queries reach the logger ("probe.example.com")
	DNSLogURL string         // the logger's "who asked" endpoint
	Timeout   time.Duration  // per check; 0: 5 s
}

// Validate reports what is wrong with v, naming the field to fix.
func (v Verification) Validate() error {
	for _, u := range []struct{ name, url string }{{"EchoURL", v.EchoURL}, {"DNSLogURL", v.DNSLogURL}} {
		if p, err := url.Parse(u.url); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("egress verify: %s %q: give an http(s) URL", u.name, u.url)
		}
	}
	switch {
	case !v.Resolver.Addr().IsValid():
		return fmt.Errorf("egress verify: no Resolver: give the exit's DNS server, which the workspace uses")
	case v.DNSZone == "" || strings.ContainsAny(v.DNSZone, " /:"):
		return fmt.Errorf("egress verify: DNSZone %q: give a DNS zone the logger answers for", v.DNSZone)
	}
	return nil
}

func (v Verification) timeout() time.Duration {
	if v.Timeout <= 0 {
		return 5 * time.Second
	}
	return v.Timeout
}

func (v Verification) resolver() string {
	if v.Resolver.Port() == 0 {
		return netip.AddrPortFrom(v.Resolver.Addr(), 53).String()
	}
	return v.Resolver.String()
}

// Verify checks from inside workspace c that (1) the echo service answers, (2) it saw the
// exit's public address, and (3) a query for a fresh name through Resolver reached the DNS
// logger from that address only. The first failure is returned as a *CheckError.
func Verify(ctx context.Context, c wsnet.Config, v Verification) error {
	if err := v.Validate(); err != nil {
		return err
	}
	client := v.httpClient(c)
	defer client.CloseIdleConnections()
	seen, err := v.echo(ctx, client)
	if err != nil {
		return &CheckError{CheckConnectivity, err}
	}
	want := seen
	if v.ExitIP.IsValid() {
		if seen != v.ExitIP {
			return &CheckError{CheckExitIP, fmt.Errorf("the echo %s saw %v, the exit's address is %v: traffic leaves by another way", v.EchoURL, seen, v.ExitIP)}
		}
		want = v.ExitIP
	}
	if err := v.checkDNS(ctx, c, client, want); err != nil {
		return &CheckError{CheckDNS, err}
	}
	return nil
}

// httpClient dials from inside the workspace and resolves names through v.Resolver.
func (v Verification) httpClient(c wsnet.Config) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return wsnet.Dial(ctx, c, network, addr)
	}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dial(ctx, network, v.resolver())
	}}
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if _, err := netip.ParseAddr(host); err != nil {
			ips, err := r.LookupNetIP(ctx, "ip4", host)
			if err != nil || len(ips) == 0 {
				return nil, fmt.Errorf("resolving %s through %s: %v", host, v.resolver(), err)
			}
			addr = net.JoinHostPort(ips[0].String(), port)
		}
		return dial(ctx, network, addr)
	}}
	return &http.Client{Transport: tr, Timeout: v.timeout()}
}

// echo asks the echo service which address it saw.
func (v Verification) echo(ctx context.Context, client *http.Client) (netip.Addr, error) {
	body, err := get(ctx, client, v.EchoURL)
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(strings.TrimSpace(body))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("the echo %s answered %q, not an address: is it an echo service?", v.EchoURL, body)
	}
	return a.Unmap(), nil
}

func get(ctx context.Context, client *http.Client, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s from inside the workspace: %w", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return string(b), nil
}

// checkDNS asks v.Resolver for a fresh name under v.DNSZone, then asks the logger who asked.
func (v Verification) checkDNS(ctx context.Context, c wsnet.Config, client *http.Client, want netip.Addr) error {
	name := probeName(v.DNSZone)
	if err := v.query(ctx, c, name); err != nil {
		return err
	}
	body, err := get(ctx, client, v.DNSLogURL+"?name="+url.QueryEscape(name))
	if err != nil {
		return fmt.Errorf("asking the DNS logger who asked for %s: %w", name, err)
	}
	from := strings.Fields(body)
	if len(from) == 0 {
		return fmt.Errorf("the logger saw no query for %s: %s did not ask it (is %s delegated to the logger?)", name, v.resolver(), v.DNSZone)
	}
	for _, f := range from {
		if a, err := netip.ParseAddr(f); err != nil || a.Unmap() != want {
			return fmt.Errorf("queries for %s arrived from %s, not only from the exit's %v: DNS leaves outside the tunnel", name, strings.Join(from, ", "), want)
		}
	}
	return nil
}

// probeName is a name never asked before: "v-<random>.<zone>".
func probeName(zone string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return "v-" + hex.EncodeToString(b) + "." + strings.Trim(zone, ".")
}

// query asks v.Resolver for name's A record from inside the workspace, over UDP, trying up to
// three times within the check's timeout. Any answer counts (NXDOMAIN too): the question was
// carried.
func (v Verification) query(ctx context.Context, c wsnet.Config, name string) error {
	ctx, cancel := context.WithTimeout(ctx, v.timeout())
	defer cancel()
	conn, err := wsnet.Dial(ctx, c, "udp", v.resolver())
	if err != nil {
		return err
	}
	defer conn.Close()
	msg, id, err := dnsQuery(name)
	if err != nil {
		return err
	}
	per := v.timeout() / 3
	var last error
	for range 3 {
		conn.SetDeadline(time.Now().Add(per))
		if _, err := conn.Write(msg); err != nil {
			return fmt.Errorf("query %s to %s: %w", name, v.resolver(), err)
		}
		if last = readAnswer(conn, id); last == nil {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("query %s to %s through the tunnel: no answer: %w", name, v.resolver(), last)
}

func dnsQuery(name string) ([]byte, uint16, error) {
	n, err := dnsmessage.NewName(name + ".")
	if err != nil {
		return nil, 0, fmt.Errorf("probe name %q: %w", name, err)
	}
	b := make([]byte, 2)
	rand.Read(b)
	id := uint16(b[0])<<8 | uint16(b[1])
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	msg, err := m.Pack()
	return msg, id, err
}

// readAnswer reads until the answer to id arrives or the deadline passes.
func readAnswer(conn net.Conn, id uint16) error {
	buf := make([]byte, 1500)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		var p dnsmessage.Parser
		if h, err := p.Start(buf[:n]); err == nil && h.ID == id && h.Response {
			return nil
		}
	}
}

// IsCheck reports whether err is a failure of the named check.
func IsCheck(err error, check string) bool {
	var ce *CheckError
	return errors.As(err, &ce) && ce.Check == check
}
