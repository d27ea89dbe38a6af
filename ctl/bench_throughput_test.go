package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshwork.dev/node"
	"meshwork.dev/overlay/lab"
)

// iperf runs iperf3 from client to server's addr for secs seconds and returns Gbit/s.
func iperf(b *testing.B, client, server *lab.Host, addr string, secs int) float64 {
	return iperfVia(b, client, server, addr, addr, 5201, secs)
}

// iperfVia is iperf with the server listening on listen:5201 and the client connecting to
// connect:port (a forwarder in front of the server).
func iperfVia(b *testing.B, client, server *lab.Host, listen, connect string, port, secs int) float64 {
	srv := server.Start(nil, "iperf3", "-s", "-1", "-B", listen)
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+30)*time.Second)
	defer cancel()
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"` // iperf3 -J exits 0 even when it could not connect
	}
	var out string
	var err error
	for range 50 { // until the server listens
		out, err = client.Run(ctx, "iperf3", "-c", connect, "-p", fmt.Sprint(port), "-t", fmt.Sprint(secs), "-J")
		if err == nil {
			r.Error = ""
			if err = json.Unmarshal([]byte(out), &r); err == nil && r.Error != "" {
				err = errors.New(r.Error)
			}
		}
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		b.Fatalf("iperf3 to %s:%d: %v", connect, port, err)
	}
	if r.End.SumReceived.BitsPerSecond <= 0 { // not a figure: a ratio against it would be +Inf
		b.Fatalf("iperf3 to %s:%d moved no data:\n%s", connect, port, out)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9
}

// wgPair joins a and b with stock wireguard-go tunnels configured by wg, and returns b's
// tunnel address.
func wgPair(b *testing.B, wg string, a, bh *lab.Host, lan *lab.Network) string {
	tun := map[*lab.Host]string{a: "198.19.255.1", bh: "198.19.255.2"} // inside the lab's range
	keys := map[*lab.Host][2]string{}
	ctx := context.Background()
	for _, h := range []*lab.Host{a, bh} {
		priv, err := h.Run(ctx, "wg", "genkey")
		if err != nil {
			b.Fatal(err)
		}
		cmd := h.Command(ctx, "wg", "pubkey")
		cmd.Stdin = strings.NewReader(priv)
		pub, err := cmd.Output()
		if err != nil {
			b.Fatal(err)
		}
		keys[h] = [2]string{strings.TrimSpace(priv), strings.TrimSpace(string(pub))}
		// Interface names are unique: wireguard-go's control sockets share one directory.
		h.Start([]string{"WG_PROCESS_FOREGROUND=1"}, wg, "-f", "wgb-"+h.Name())
	}
	for h, peer := range map[*lab.Host]*lab.Host{a: bh, bh: a} {
		dev := "wgb-" + h.Name()
		keyFile := filepath.Join(b.TempDir(), "key")
		os.WriteFile(keyFile, []byte(keys[h][0]), 0o600)
		var err error
		for range 50 { // until wireguard-go made the interface
			if _, err = h.Run(ctx, "wg", "set", dev, "private-key", keyFile, "listen-port", "51820", "peer", keys[peer][1],
				"endpoint", peer.Addr(lan).String()+":51820", "allowed-ips", tun[peer]+"/32"); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			b.Fatal(err)
		}
		for _, args := range [][]string{{"addr", "add", tun[h] + "/24", "dev", dev}, {"link", "set", dev, "up", "mtu", "1280"}} {
			if _, err := h.Run(ctx, "ip", args...); err != nil {
				b.Fatal(err)
			}
		}
	}
	warm(b, "the wireguard-go tunnel", bh, tun[bh], func(ctx context.Context, port string) (net.Conn, error) {
		return a.DialContext(ctx, "tcp", net.JoinHostPort(tun[bh], port))
	})
	return tun[bh]
}

// warm waits until a TCP connection through the path being measured reaches a listener of
// to's on ip (dial is given its port), so that no measurement spends its seconds on a
// handshake: a 1-second iperf3 run through a cold tunnel once moved nothing.
func warm(b *testing.B, what string, to *lab.Host, ip string, dial func(ctx context.Context, port string) (net.Conn, error)) {
	ln, err := to.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	eventually(b, 30*time.Second, "a TCP connection through "+what, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := dial(ctx, port)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// socksForward listens on loopback inside h and carries every connection through the
// SOCKS5 proxy at proxy (inside h too) to target: what a SOCKS-capable program does, for
// iperf3, which is not one.
func socksForward(b *testing.B, h *lab.Host, proxy, target string) int {
	ln, err := h.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := socksDial(h, proxy, target)
				if err != nil {
					b.Logf("socks5 dial %s: %v", target, err)
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() {
					io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
					close(done)
				}()
				io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite() // the server is done: tell the client, or it waits on
				<-done
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// socksDial opens a SOCKS5 CONNECT to target (an IPv4 address and port) through proxy.
func socksDial(h *lab.Host, proxy, target string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := h.DialContext(ctx, "tcp", proxy)
	if err != nil {
		return nil, err
	}
	ap := netip.MustParseAddrPort(target)
	req := append([]byte{5, 1, 0, 5, 1, 0, 1}, ap.Addr().AsSlice()...)
	req = append(req, byte(ap.Port()>>8), byte(ap.Port()))
	c.SetDeadline(time.Now().Add(10 * time.Second))
	reply := make([]byte, 2+10)
	if _, err = c.Write(req); err == nil {
		_, err = io.ReadFull(c, reply)
	}
	if err == nil && (reply[0] != 5 || reply[1] != 0 || reply[3] != 0) {
		err = fmt.Errorf("proxy replied %v", reply)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// BenchmarkMeshThroughput: TCP throughput between two workmachine-style nodes (kernel TUN)
// over the mesh, and between two laptops in userspace mode (netstack; iperf3 through the
// daemon's SOCKS5 proxy), each beside stock wireguard-go configured with wg between two
// namespaces of the same kind, in the same run (target ≥ 1.0× for the TUN).
func BenchmarkMeshThroughput(b *testing.B) {
	l := lab.New(b)
	meshctl, _ := exec.LookPath("meshctl")
	wg := lab.WireGuardGo(b)
	lan := l.Network("lan")
	host := func(name string) *lab.Host {
		h := l.Host(name)
		h.Attach(lan)
		return h
	}
	coordHost := host("coord")
	coordAddr := coordHost.Addr(lan)
	a, bh, wa, wb, ua, ub := host("a"), host("b"), host("wa"), host("wb"), host("ua"), host("ub")
	for _, h := range []*lab.Host{a, bh, wa, wb, ua, ub} {
		h.DefaultRoute(coordAddr) // tailscale wants every host to have one
	}
	state := b.TempDir()
	coordHost.Start(nil, meshctl, "coord", "--id", "c1", "--state", filepath.Join(state, "coord"),
		"--http", coordAddr.String()+":8080", "--cluster", coordAddr.String()+":7000")
	token := adminKey(b, filepath.Join(state, "coord"))
	url := "http://" + coordAddr.String() + ":8080"
	ctx := context.Background()
	cmd := coordHost.Command(ctx, meshctl, "authkey", "create", "--reusable", "--json")
	cmd.Env = append(os.Environ(), "MESHCTL_COORD="+url, "MESHCTL_TOKEN="+token)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		b.Fatalf("authkey create: %v: %s", err, ee.Stderr)
	} else if err != nil {
		b.Fatal(err)
	}
	var k struct{ Key string }
	json.Unmarshal(out, &k)
	ips := map[*lab.Host]string{}
	for _, h := range []*lab.Host{a, bh, ua, ub} {
		dir := filepath.Join(state, h.Name())
		args := []string{"daemon", "--state", dir}
		if h == ua || h == ub {
			args = append(args, "--userspace")
		}
		h.Start(nil, meshctl, args...)
		daemonUp(b, dir)
		eventually(b, 60*time.Second, h.Name()+" up", func() error {
			c := h.Command(ctx, meshctl, "up", "--coord", url, "--auth-key", k.Key, "--hostname", h.Name(), "--state", dir, "--json")
			out, err := c.Output()
			var s node.Summary
			if err == nil {
				err = json.Unmarshal(out, &s)
			}
			if err == nil {
				ips[h] = s.Self.IPs[0]
			}
			return err
		})
	}
	bIP := ips[bh]
	if _, err := netip.ParseAddr(bIP); err != nil {
		b.Fatalf("b's mesh address %q", bIP)
	}
	wgIP := wgPair(b, wg, wa, wb, lan)
	// ub hands mesh connections to its loopback, where iperf3 listens.
	fwd := socksForward(b, ua, "127.0.0.1:1055", ips[ub]+":5201")
	warm(b, "the mesh (kernel TUN)", bh, bIP, func(ctx context.Context, port string) (net.Conn, error) {
		return a.DialContext(ctx, "tcp", net.JoinHostPort(bIP, port))
	})
	warm(b, "the mesh (userspace, SOCKS5)", ub, "127.0.0.1", func(_ context.Context, port string) (net.Conn, error) {
		return socksDial(ua, "127.0.0.1:1055", net.JoinHostPort(ips[ub], port))
	})

	secs := 3
	if b.N == 1 {
		secs = 1 // a correctness run
	}
	var mesh, user, base float64
	for range b.N {
		mesh += iperf(b, a, bh, bIP, secs)
		user += iperfVia(b, ua, ub, "127.0.0.1", "127.0.0.1", fwd, secs)
		base += iperf(b, wa, wb, wgIP, secs)
	}
	mesh, user, base = mesh/float64(b.N), user/float64(b.N), base/float64(b.N)
	b.ReportMetric(mesh, "Gbit/s")
	b.ReportMetric(user, "userspace-Gbit/s")
	b.ReportMetric(base, "wireguard-go-Gbit/s")
	b.ReportMetric(mesh/base, "x-wireguard-go")
	b.ReportMetric(user/base, "userspace-x-wireguard-go")
	b.Logf("TCP over the mesh (kernel TUN): %.2f Gbit/s; userspace (netstack, through SOCKS5): %.2f Gbit/s; stock wireguard-go + wg: %.2f Gbit/s; ratios %.2f× and %.2f× (target ≥ 1.0× for the TUN)",
		mesh, user, base, mesh/base, user/base)
}
