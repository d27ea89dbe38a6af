package wsnet_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"meshwork.dev/overlay/lab"
	"meshwork.dev/workspace/wsnet"
)

// TestWall: a workspace behind the wall reaches the internet (NATed) and mesh peers (through
// the mesh interface), and answers a connection a host in a private range opened to it; it
// does not reach its machine on any address (LAN, internet side, mesh IPv4 and IPv6, its
// IPv4 and IPv6 gateways), cloud metadata at 169.254.169.254, nor a private-range host, IPv4
// (10/8) or IPv6 (ULA). Allowing 10.77.0.0/16 opens that range and nothing else.
func TestWall(t *testing.T) {
	l, wm := newHost(t) // its mesh addresses 100.64.0.1 and fd7a:115c:a1e0::1 on lo
	in := l.Internet()
	wmInet := wm.Attach(in.Net)
	wm.DefaultRoute(in.Addr)

	// A LAN with a host holding a private address, a ULA one and the metadata address.
	lan := l.Network("lan")
	wmLAN := wm.Attach(lan)
	db := l.Host("db")
	dbLAN := db.Attach(lan)
	db.DefaultRoute(wmLAN)
	db.AddAddrs(lan.Name(), "10.77.0.5/32", "169.254.169.254/32", "fd00:77::5/64")
	wm.AddAddrs(lan.Name(), "fd00:77::1/64")
	wm.Route(netip.MustParsePrefix("10.77.0.0/16"), dbLAN)
	wm.Route(netip.MustParsePrefix("169.254.169.254/32"), dbLAN)
	db.Route(netip.MustParsePrefix("fd7a:115c:a1e0::/48"), netip.MustParseAddr("fd00:77::1"))

	// A mesh peer behind the machine's mesh interface, mesh0 (the agent's TUN would be).
	mesh := l.Network("mesh0")
	wmMesh := wm.Attach(mesh)
	peer := l.Host("peer")
	peerAddr := peer.Attach(mesh)
	peer.AddAddrs(mesh.Name(), "100.64.0.9/32")
	wm.Route(netip.MustParsePrefix("100.64.0.9/32"), peerAddr)
	peer.Route(netip.MustParsePrefix("100.64.0.0/10"), wmMesh)

	c := testConfig(t)
	setup(t, wm, c)
	for _, h := range []*lab.Host{wm, db, peer} {
		serveName(t, h, ":80")
	}
	serveInside(t, c, ":22", func(conn net.Conn) { fmt.Fprintln(conn, "workspace") })
	for range 2 { // enabling again replaces the tables
		if err := wm.Do(func() error { return wsnet.EnableNAT(mesh.Name()) }); err != nil {
			t.Fatal(err)
		}
		if err := wm.Do(func() error { return wsnet.EnableWall(wsnet.Wall{MeshIf: mesh.Name()}) }); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { wm.Do(wsnet.DisableNAT); wm.Do(wsnet.DisableWall) })

	walled := map[string]string{
		"the machine's LAN address":           addrPort(wmLAN, 80),
		"the machine's internet-side address": addrPort(wmInet, 80),
		"the machine's mesh IPv4":             "100.64.0.1:80",
		"the machine's mesh IPv6":             "[fd7a:115c:a1e0::1]:80",
		"the IPv4 gateway":                    addrPort(wsnet.GatewayIPv4, 80),
		"the IPv6 gateway":                    "[fe80::1%" + wsnet.InsideIf + "]:80",
		"cloud metadata":                      "169.254.169.254:80",
		"a private-range host":                "10.77.0.5:80",
		"a ULA host":                          "[fd00:77::5]:80",
	}
	for what, addr := range walled {
		if got, err := greetingFrom(c, addr); err == nil {
			t.Errorf("the workspace reached %s (%s): %q", what, addr, got)
		}
	}
	if got, err := greetingFrom(c, "100.64.0.9:80"); err != nil || got != "peer" {
		t.Errorf("the workspace → a mesh peer: %q, %v", got, err)
	}
	if got, err := httpFrom(c, addrPort(in.Addr, 80)); err != nil || got != wmInet.String() {
		t.Errorf("the workspace → the internet: seen as %q (want the machine's %v), %v", got, wmInet, err)
	}
	// The private-range host opens a connection to the workspace: the answer gets back.
	if got, err := dialFrom(db, "10.77.0.5", addrPort(c.IPv4, 22)); err != nil || got != "workspace" {
		t.Errorf("10.77.0.5 → the workspace's port 22: %q, %v", got, err)
	}

	// The workspace's root takes another mesh address (another workspace's, say): what it
	// sends as that never leaves the machine; as itself it does.
	pc, err := peer.ListenPacket("udp", ":5353")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	addAddrsIn(t, c, "100.64.0.8/32")
	for src, want := range map[string]bool{"100.64.0.8": false, "100.64.0.7": true} {
		if err := udpFrom(c, src, "100.64.0.9:5353", src); err != nil {
			t.Fatal(err)
		}
		if got := received(pc, src); got != want {
			t.Errorf("a datagram from the workspace as %s reached the mesh peer: %v, want %v", src, got, want)
		}
	}

	// An admin opens 10.77.0.0/16: that range only.
	allow := wsnet.Wall{MeshIf: mesh.Name(), Allow: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/16")}}
	if err := wm.Do(func() error { return wsnet.EnableWall(allow) }); err != nil {
		t.Fatal(err)
	}
	if got, err := greetingFrom(c, "10.77.0.5:80"); err != nil || got != "db" {
		t.Errorf("allowed 10.77.0.0/16, the workspace → 10.77.0.5: %q, %v", got, err)
	}
	for _, what := range []string{"cloud metadata", "the machine's LAN address", "the machine's mesh IPv4", "a ULA host"} {
		if got, err := greetingFrom(c, walled[what]); err == nil {
			t.Errorf("allowed 10.77.0.0/16, the workspace reached %s: %q", what, got)
		}
	}
}

// TestWallRefusesBadConfig: a wall without a mesh interface or with a range that is not a
// network address is refused before anything is changed.
func TestWallRefusesBadConfig(t *testing.T) {
	for _, w := range []wsnet.Wall{
		{},
		{MeshIf: "a-name-too-long-for-linux"},
		{MeshIf: "mesh0", Allow: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/16")}},
		{MeshIf: "mesh0", Allow: []netip.Prefix{{}}},
	} {
		if err := wsnet.EnableWall(w); err == nil {
			t.Errorf("EnableWall(%+v) = nil error", w)
		}
	}
}

func addrPort(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }

// serveName answers every TCP connection to addr on h with h's name.
func serveName(t *testing.T, h *lab.Host, addr string) {
	ln, err := h.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(conn, h.Name())
			conn.Close()
		}
	}()
}

// greetingFrom connects from inside the workspace to addr and reads the first line.
func greetingFrom(c wsnet.Config, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := wsnet.Dial(ctx, c, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return firstLine(conn)
}

// httpFrom asks the lab internet's HTTP server at addr, from inside the workspace, what
// source address it sees.
func httpFrom(c wsnet.Config, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := wsnet.Dial(ctx, c, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", addr)
	b, err := io.ReadAll(conn)
	_, body, _ := strings.Cut(string(b), "\r\n\r\n")
	return strings.TrimSpace(body), err
}

// dialFrom connects from h, from its local address src, to addr and reads the first line.
func dialFrom(h *lab.Host, src, addr string) (string, error) {
	var conn net.Conn
	err := h.Do(func() (err error) {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		conn, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return firstLine(conn)
}

func firstLine(conn net.Conn) (string, error) {
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// addAddrsIn adds addresses inside the workspace, as its root can.
func addAddrsIn(t *testing.T, c wsnet.Config, addrs ...string) {
	t.Helper()
	ns, err := netns.GetFromName(c.Netns)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	link, err := nl.LinkByName(wsnet.InsideIf)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		addr, _ := netlink.ParseAddr(a)
		addr.Flags = 0x02 // IFA_F_NODAD
		if err := nl.AddrAdd(link, addr); err != nil {
			t.Fatalf("address %s in the workspace: %v", a, err)
		}
	}
}

// udpFrom sends msg from inside the workspace, from its address src, to dst.
func udpFrom(c wsnet.Config, src, dst, msg string) error {
	ns, err := netns.GetFromName(c.Netns)
	if err != nil {
		return err
	}
	defer ns.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the runtime discards the thread
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		if err == nil {
			_, err = conn.Write([]byte(msg))
			conn.Close()
		}
		errc <- err
	}()
	return <-errc
}

// received reports whether msg arrives on pc within a second.
func received(pc net.PacketConn, msg string) bool {
	buf := make([]byte, 64)
	pc.SetReadDeadline(time.Now().Add(time.Second))
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			return false
		}
		if string(buf[:n]) == msg {
			return true
		}
	}
}
