package wsnet_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"meshwork.dev/workspace/wsnet"
)

// divertConfig is a namespace for the divert tests (prefix ixd) holding mesh addresses ending
// in n.
func divertConfig(n int) wsnet.Config {
	b := make([]byte, 4)
	rand.Read(b)
	id := hex.EncodeToString(b)
	return wsnet.Config{
		Netns:  "ixd-" + id,
		HostIf: wsnet.HostIfPrefix + id,
		IPv4:   netip.AddrFrom4([4]byte{100, 64, 0, byte(n)}),
		IPv6:   netip.MustParseAddr(fmt.Sprintf("fd7a:115c:a1e0::%d", n)),
	}
}

// divertLab is a workmachine with three namespaces on it: an environment service (behind
// its guard, which lets the client in), a client and a workspace.
type divertLab struct{ svc, client, ws wsnet.Config }

func newDivertLab(t *testing.T) divertLab {
	_, wm := newHost(t)
	d := divertLab{svc: divertConfig(7), client: divertConfig(8), ws: divertConfig(9)}
	for _, c := range []wsnet.Config{d.svc, d.client, d.ws} {
		setup(t, wm, c)
	}
	allow := []netip.Prefix{netip.PrefixFrom(d.client.IPv4, 32), netip.PrefixFrom(d.client.IPv6, 128)}
	if err := wsnet.Guard(d.svc.Netns, allow); err != nil {
		t.Fatal(err)
	}
	serveLines(t, d.svc, ":8080", "service")
	serveLines(t, d.ws, ":3000", "workspace")
	return d
}

// serveLines answers each connection to addr in c's namespace with "name SOURCE-IP", then each
// line it reads with name.
func serveLines(t *testing.T, c wsnet.Config, addr, name string) {
	serveInside(t, c, addr, func(conn net.Conn) {
		src := conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		fmt.Fprintf(conn, "%s %v\n", name, src)
		r := bufio.NewReader(conn)
		for {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
			fmt.Fprintln(conn, name)
		}
	})
}

// lineConn is a client connection that says hello and reads who answers.
type lineConn struct {
	net.Conn
	r *bufio.Reader
}

func dialLines(t *testing.T, c wsnet.Config, addr string) (*lineConn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	conn, err := wsnet.Dial(ctx, c, "tcp", addr)
	if err != nil {
		t.Fatalf("client → %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	lc := &lineConn{Conn: conn, r: bufio.NewReader(conn)}
	return lc, lc.line(t)
}

func (lc *lineConn) line(t *testing.T) string {
	t.Helper()
	lc.SetDeadline(time.Now().Add(3 * time.Second))
	s, err := lc.r.ReadString('\n')
	if err != nil {
		t.Fatalf("read from %v: %v", lc.RemoteAddr(), err)
	}
	return strings.TrimSuffix(s, "\n")
}

// who asks an open connection who answers it now.
func (lc *lineConn) who(t *testing.T) string {
	t.Helper()
	fmt.Fprintln(lc, "who")
	return lc.line(t)
}

// TestDivertGlobal: with a global divert on the service's port, new connections from a client,
// IPv4 and IPv6, reach the workspace, which sees the service's address as their source; a
// connection open before stays on the service; the counter counts the diverted ones. With the
// divert removed, new connections reach the service again and the diverted one still open
// keeps reaching the workspace.
func TestDivertGlobal(t *testing.T) {
	d := newDivertLab(t)
	svc4, svc6 := addrPort(d.svc.IPv4, 8080), addrPort(d.svc.IPv6, 8080)
	before, hello := dialLines(t, d.client, svc4)
	if want := "service " + d.client.IPv4.String(); hello != want {
		t.Fatalf("before the divert: %q, want %q", hello, want)
	}

	div := wsnet.Divert{ID: "icp-1", Port: 8080,
		To4: netip.AddrPortFrom(d.ws.IPv4, 3000), To6: netip.AddrPortFrom(d.ws.IPv6, 3000)}
	for range 2 { // setting the same again changes nothing
		if err := wsnet.SetDiverts(d.svc, []wsnet.Divert{div}); err != nil {
			t.Fatal(err)
		}
	}
	var diverted []*lineConn
	for _, c := range []struct{ addr, want string }{
		{svc4, "workspace " + d.svc.IPv4.String()},
		{svc6, "workspace " + d.svc.IPv6.String()},
	} {
		lc, hello := dialLines(t, d.client, c.addr)
		if hello != c.want {
			t.Errorf("client → %s while diverted: %q, want %q", c.addr, hello, c.want)
		}
		diverted = append(diverted, lc)
	}
	if got := before.who(t); got != "service" {
		t.Errorf("the connection open before the divert is answered by %q", got)
	}
	counts, err := wsnet.DivertCounts(d.svc)
	if err != nil || counts["icp-1"] != 2 {
		t.Errorf("DivertCounts = %v, %v; want icp-1: 2", counts, err)
	}

	if err := wsnet.SetDiverts(d.svc, nil); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{svc4, svc6} {
		if _, hello := dialLines(t, d.client, a); !strings.HasPrefix(hello, "service ") {
			t.Errorf("client → %s after the divert: %q", a, hello)
		}
	}
	for _, lc := range diverted {
		if got := lc.who(t); got != "workspace" {
			t.Errorf("a diverted connection still open after the divert went is answered by %q", got)
		}
	}
	if got := before.who(t); got != "service" {
		t.Errorf("the connection open since before is answered by %q", got)
	}
}

// TestDivertPersonal: with a personal divert, new connections to the service's port, IPv4
// and IPv6, reach the proxy listening in the service's namespace, and the proxy's own
// connection to the service's address and port reaches the service itself.
func TestDivertPersonal(t *testing.T) {
	d := newDivertLab(t)
	serveInside(t, d.svc, ":15001", func(conn net.Conn) {
		local := conn.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		hello, err := greetingFrom(d.svc, addrPort(local, 8080))
		if err != nil {
			hello = err.Error()
		}
		fmt.Fprintf(conn, "proxy, then %s\n", hello)
	})
	if err := wsnet.SetDiverts(d.svc, []wsnet.Divert{{ID: "port-8080", Port: 8080, Proxy: 15001}}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{d.svc.IPv4, d.svc.IPv6} {
		want := "proxy, then service " + a.String()
		if _, hello := dialLines(t, d.client, addrPort(a, 8080)); hello != want {
			t.Errorf("client → %v:8080 with the proxy in front: %q, want %q", a, hello, want)
		}
	}
	counts, err := wsnet.DivertCounts(d.svc)
	if err != nil || counts["port-8080"] != 2 {
		t.Errorf("DivertCounts = %v, %v; want port-8080: 2", counts, err)
	}
}

// TestSetDivertsRefusesBadInput: a divert without an ID, port or target, with both a proxy and
// a target, a target of the wrong family, or two diverts on one port are refused before
// anything is touched.
func TestSetDivertsRefusesBadInput(t *testing.T) {
	c := wsnet.Config{Netns: "ixd-nonesuch"}
	to4, to6 := netip.MustParseAddrPort("100.64.0.9:3000"), netip.MustParseAddrPort("[fd7a:115c:a1e0::9]:3000")
	for name, ds := range map[string][]wsnet.Divert{
		"no ID":             {{Port: 80, To4: to4}},
		"no port":           {{ID: "a", To4: to4}},
		"no target":         {{ID: "a", Port: 80}},
		"proxy and target":  {{ID: "a", Port: 80, To4: to4, Proxy: 15001}},
		"proxy on the port": {{ID: "a", Port: 80, Proxy: 80}},
		"v6 as To4":         {{ID: "a", Port: 80, To4: to6}},
		"v4 as To6":         {{ID: "a", Port: 80, To6: to4}},
		"no target port":    {{ID: "a", Port: 80, To4: netip.AddrPortFrom(to4.Addr(), 0)}},
		"two on one port":   {{ID: "a", Port: 80, To4: to4}, {ID: "b", Port: 80, Proxy: 15001}},
	} {
		err := wsnet.SetDiverts(c, ds)
		if err == nil || strings.Contains(err.Error(), "namespace") {
			t.Errorf("%s: SetDiverts = %v, want a refusal naming the field", name, err)
		}
	}
}
