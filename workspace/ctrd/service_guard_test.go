package ctrd_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"meshwork.dev/workspace/ctrd"
)

// TestServiceGuard connects to a service from several addresses of another namespace (the
// workmachine's): its environment's and the allowed ones get in, the rest are dropped, over
// IPv4 and IPv6; SetServicePeers changes who, live, and leaves open connections be.
func TestServiceGuard(t *testing.T) {
	e := newSvcEnv(t)
	s := svcSpec("redis", 30)
	peer := netip.MustParseAddr("100.64.0.3") // another service of the environment
	s.Hosts = append(s.Hosts, ctrd.HostEntry{Addr: peer, Names: []string{"api"}})
	allowed4, allowed6 := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd7a:115c:a1e0::1")
	other4, other6 := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("fd7a:115c:a1e0::2")
	s.Allow = []netip.Prefix{netip.PrefixFrom(allowed4, 32), netip.PrefixFrom(allowed6, 128)}
	e.run(s)

	open := e.waitEcho(allowed4, s.IPv4) // the server is up, and .1 may connect
	defer open.Close()
	for _, c := range []struct {
		from, to netip.Addr
		want     bool
	}{
		{peer, s.IPv4, true}, {allowed6, s.IPv6, true},
		{other4, s.IPv4, false}, {other6, s.IPv6, false},
	} {
		if got := e.canConnect(c.from, c.to); got != c.want {
			t.Errorf("%v → %v: connected %v, want %v", c.from, c.to, got, c.want)
		}
	}

	for _, c := range []struct {
		from netip.Addr
		want bool
	}{{allowed4, true}, {other4, false}} {
		if got := e.udpAnswers(c.from, s.IPv4); got != c.want {
			t.Errorf("UDP %v → %v: answered %v, want %v", c.from, s.IPv4, got, c.want)
		}
		if got := e.pings(c.from, s.IPv4); got != c.want {
			t.Errorf("ping %v → %v: answered %v, want %v", c.from, s.IPv4, got, c.want)
		}
	}

	if err := e.rt.SetServicePeers(e.ctx(), s.ID, s.Hosts, []netip.Prefix{netip.PrefixFrom(other4, 32)}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		from, to netip.Addr
		want     bool
	}{
		{other4, s.IPv4, true}, {peer, s.IPv4, true},
		{allowed4, s.IPv4, false}, {allowed6, s.IPv6, false},
	} {
		if got := e.canConnect(c.from, c.to); got != c.want {
			t.Errorf("after SetServicePeers: %v → %v: connected %v, want %v", c.from, c.to, got, c.want)
		}
	}
	if err := echo(open); err != nil {
		t.Errorf("a connection open before SetServicePeers: %v", err)
	}

	// The environment changes (api gone, cache new): /etc/hosts follows in the running
	// container, and so does the guard.
	hosts := []ctrd.HostEntry{{Addr: other4, Names: []string{"cache"}}}
	if err := e.rt.SetServicePeers(e.ctx(), s.ID, hosts, nil); err != nil {
		t.Fatal(err)
	}
	if _, out, err := e.rt.ExecService(e.ctx(), s.ID, []string{"cat", "/etc/hosts"}, 10*time.Second); err != nil ||
		!strings.Contains(string(out), "100.64.0.2\tcache\n") || strings.Contains(string(out), "\tapi") {
		t.Errorf("/etc/hosts in the running service after SetServicePeers: %q %v", out, err)
	}
	if !e.canConnect(other4, s.IPv4) || e.canConnect(peer, s.IPv4) {
		t.Errorf("the guard did not follow the environment's new services")
	}
}

// dial connects from src (an address of the workmachine's) to dst:8080.
func (e *svcEnv) dial(src, dst netip.Addr, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := e.host.Do(func() (err error) {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err = d.Dial("tcp", netip.AddrPortFrom(dst, 8080).String())
		return err
	})
	return c, err
}

// waitEcho dials until the service's echo server answers, and returns the connection.
func (e *svcEnv) waitEcho(src, dst netip.Addr) net.Conn {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := e.dial(src, dst, time.Second)
		if err == nil {
			if err = echo(c); err == nil {
				return c
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%v → %v:8080: %v", src, dst, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// canConnect reports whether src gets an answer from dst's echo server within a second.
func (e *svcEnv) canConnect(src, dst netip.Addr) bool {
	c, err := e.dial(src, dst, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	return echo(c) == nil
}

// echo reads the wsecho greeting (once) and checks an echo.
func echo(c net.Conn) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	br := bufio.NewReader(c)
	if _, err := fmt.Fprintf(c, "ping\n"); err != nil {
		return err
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if line == "ping\n" {
			return nil
		}
	}
}

// udpAnswers reports whether dst's UDP echo on 8081 answers src within a second.
func (e *svcEnv) udpAnswers(src, dst netip.Addr) bool {
	var c net.Conn
	err := e.host.Do(func() (err error) {
		c, err = net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 8081)))
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return false
	}
	_, err = c.Read(make([]byte, 64))
	return err == nil
}

// pings reports whether dst answers one ICMP echo from src (IPv4).
func (e *svcEnv) pings(src, dst netip.Addr) bool {
	var c net.PacketConn
	err := e.host.Do(func() (err error) {
		c, err = net.ListenPacket("ip4:icmp", src.String())
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	msg := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1} // echo request, id 0x1234, seq 1
	sum := 0
	for i := 0; i < len(msg); i += 2 {
		sum += int(msg[i])<<8 | int(msg[i+1])
	}
	sum = (sum >> 16) + (sum & 0xffff)
	msg[2], msg[3] = byte(^sum>>8), byte(^sum)
	if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		e.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return false
		}
		if from.String() == dst.String() && n >= 8 && buf[0] == 0 && buf[4] == 0x12 && buf[5] == 0x34 {
			return true
		}
	}
}
