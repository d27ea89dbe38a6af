package lab

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/dns/dnsmessage"
)

// Internet is the lab's stand-in for the internet: a network, and on its first address a host
// whose HTTP server (port 80) answers every request with the caller's source address and whose
// DNS server (UDP port 53) answers names added with AddRecord and logs every query. The log
// is asked over HTTP too: GET /dns?name=NAME answers the addresses that asked for NAME, one a
// line (the DNS logger's protocol of overlay/egress.Verify).
type Internet struct {
	Net  *Network
	Host *Host
	Addr netip.Addr

	lab  *Lab
	http *http.Server
	dns  net.PacketConn
	wg   sync.WaitGroup // the servers' goroutines

	mu      sync.Mutex // guards records and queries
	records map[string]netip.Addr
	queries []DNSQuery
}

// A DNSQuery is one question the internet's DNS server was asked.
type DNSQuery struct {
	From netip.AddrPort
	Name string // lower case, without the trailing dot
	Type string // "A", "AAAA", ...
}

// Internet returns the lab's internet, making it on first use.
func (l *Lab) Internet() *Internet {
	l.t.Helper()
	l.mu.Lock()
	in := l.inet
	l.mu.Unlock()
	if in != nil {
		return in
	}
	in = &Internet{lab: l, records: map[string]netip.Addr{}}
	in.Net = l.Network("inet")
	in.Host = l.Host("inet")
	in.Addr = in.Host.Attach(in.Net)
	if err := in.defaultRouteOnLink(); err != nil {
		l.t.Fatalf("lab: internet: %v", err)
	}
	if err := in.serve(); err != nil {
		in.close()
		l.t.Fatalf("lab: internet servers: %v", err)
	}
	l.mu.Lock()
	l.inet = in
	l.mu.Unlock()
	return in
}

// defaultRouteOnLink gives the internet host a default route out of its only interface.
func (in *Internet) defaultRouteOnLink() error {
	link, err := in.Host.nl.LinkByName(in.Net.name)
	if err != nil {
		return err
	}
	return in.Host.nl.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Scope: netlink.SCOPE_LINK,
		Dst: prefixNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0))})
}

// PublicHost makes a host with an address directly on the internet.
func (in *Internet) PublicHost(name string) *Host {
	in.lab.t.Helper()
	h := in.lab.Host(name)
	h.Attach(in.Net)
	h.DefaultRoute(in.Addr)
	return h
}

// URL is the internet's HTTP server, which answers with the caller's address.
func (in *Internet) URL() string { return "http://" + in.Addr.String() + "/" }

// AddRecord makes the DNS server answer name (an A or AAAA query) with addr.
func (in *Internet) AddRecord(name string, addr netip.Addr) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.records[canonical(name)] = addr
}

// Queries returns every DNS question asked so far, oldest first.
func (in *Internet) Queries() []DNSQuery {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]DNSQuery(nil), in.queries...)
}

func (in *Internet) serve() error {
	ln, err := in.Host.Listen("tcp", ":80")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", echoAddr)
	mux.HandleFunc("/dns", in.whoAsked)
	in.http = &http.Server{Handler: mux}
	if in.dns, err = in.Host.ListenPacket("udp", ":53"); err != nil {
		ln.Close()
		return err
	}
	in.wg.Add(2)
	go func() {
		defer in.wg.Done()
		in.http.Serve(ln)
	}()
	go func() {
		defer in.wg.Done()
		in.serveDNS()
	}()
	return nil
}

func (in *Internet) close() {
	if in.http != nil {
		in.http.Close()
	}
	if in.dns != nil {
		in.dns.Close()
	}
	in.wg.Wait()
}

// echoAddr answers with the caller's IP address, as ifconfig.me does.
func echoAddr(w http.ResponseWriter, r *http.Request) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte(ap.Addr().String() + "\n"))
}

// DNSURL is the HTTP endpoint that says who asked the DNS server for a name (?name=NAME).
func (in *Internet) DNSURL() string { return in.URL() + "dns" }

// whoAsked answers the addresses that asked for the name ?name=, one a line, first asker first.
func (in *Internet) whoAsked(w http.ResponseWriter, r *http.Request) {
	name := canonical(r.URL.Query().Get("name"))
	seen := map[netip.Addr]bool{}
	w.Header().Set("Content-Type", "text/plain")
	for _, q := range in.Queries() {
		if q.Name == name && !seen[q.From.Addr()] {
			seen[q.From.Addr()] = true
			w.Write([]byte(q.From.Addr().String() + "\n"))
		}
	}
}

func (in *Internet) serveDNS() {
	buf := make([]byte, 1500)
	for {
		n, from, err := in.dns.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		ap := from.(*net.UDPAddr).AddrPort()
		resp, ok := in.answer(buf[:n], netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		if ok {
			in.dns.WriteTo(resp, from)
		}
	}
}

// answer logs the query in msg and builds the response.
func (in *Internet) answer(msg []byte, from netip.AddrPort) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || h.Response {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	name := canonical(q.Name.String())
	in.mu.Lock()
	in.queries = append(in.queries, DNSQuery{From: from, Name: name, Type: strings.TrimPrefix(q.Type.String(), "Type")})
	addr, found := in.records[name]
	in.mu.Unlock()

	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeSuccess}
	if !found {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}
	switch {
	case found && q.Type == dnsmessage.TypeA && addr.Is4():
		b.AResource(rr, dnsmessage.AResource{A: addr.As4()})
	case found && q.Type == dnsmessage.TypeAAAA && addr.Is6():
		b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: addr.As16()})
	}
	resp, err := b.Finish()
	return resp, err == nil
}

func canonical(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }
