package ctl

import (
	"context"
	"encoding/json"
	"fmt"
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

// wireguardGoVersion is the stock wireguard-go the throughput baseline runs.
const wireguardGoVersion = "v0.0.0-20260522210424-ecfc5a8d5446"

// wireguardGo returns the stock wireguard-go binary, built into bin/stock on first use.
func wireguardGo(b *testing.B) string {
	bin, _ := filepath.Abs("../bin/stock")
	path := filepath.Join(bin, "wireguard")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	cmd := exec.Command("go", "install", "golang.zx2c4.com/wireguard@"+wireguardGoVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building wireguard-go: %v\n%s", err, out)
	}
	return path
}

// iperf runs iperf3 from client to server's addr for secs seconds and returns Gbit/s.
func iperf(b *testing.B, client, server *lab.Host, addr string, secs int) float64 {
	srv := server.Start(nil, "iperf3", "-s", "-1", "-B", addr)
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+30)*time.Second)
	defer cancel()
	var out string
	var err error
	for range 50 { // until the server listens
		if out, err = client.Run(ctx, "iperf3", "-c", addr, "-t", fmt.Sprint(secs), "-J"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		b.Fatalf("iperf3 to %s: %v", addr, err)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		b.Fatalf("iperf3 output: %v", err)
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
	return tun[bh]
}

// BenchmarkMeshThroughput: TCP throughput between two workmachine-style nodes (kernel TUN)
// over the mesh, beside stock wireguard-go configured with wg between two namespaces of
// the same kind, in the same run (target ≥ 1.0×).
func BenchmarkMeshThroughput(b *testing.B) {
	l := lab.New(b)
	meshctl, _ := exec.LookPath("meshctl")
	wg := wireguardGo(b)
	lan := l.Network("lan")
	host := func(name string) *lab.Host {
		h := l.Host(name)
		h.Attach(lan)
		return h
	}
	coordHost := host("coord")
	coordAddr := coordHost.Addr(lan)
	a, bh, wa, wb := host("a"), host("b"), host("wa"), host("wb")
	for _, h := range []*lab.Host{a, bh, wa, wb} {
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
	if err != nil {
		b.Fatal(err)
	}
	var k struct{ Key string }
	json.Unmarshal(out, &k)
	var bIP string
	for _, h := range []*lab.Host{a, bh} {
		dir := filepath.Join(state, h.Name())
		h.Start(nil, meshctl, "daemon", "--state", dir)
		eventually(b, 60*time.Second, h.Name()+" up", func() error {
			c := h.Command(ctx, meshctl, "up", "--coord", url, "--auth-key", k.Key, "--hostname", h.Name(), "--state", dir, "--json")
			out, err := c.Output()
			var s node.Summary
			if err == nil {
				err = json.Unmarshal(out, &s)
			}
			if err == nil && h == bh {
				bIP = s.Self.IPs[0]
			}
			return err
		})
	}
	if _, err := netip.ParseAddr(bIP); err != nil {
		b.Fatalf("b's mesh address %q", bIP)
	}
	wgIP := wgPair(b, wg, wa, wb, lan)

	secs := 3
	if b.N == 1 {
		secs = 1 // a correctness run
	}
	var mesh, base float64
	for range b.N {
		mesh += iperf(b, a, bh, bIP, secs)
		base += iperf(b, wa, wb, wgIP, secs)
	}
	mesh, base = mesh/float64(b.N), base/float64(b.N)
	b.ReportMetric(mesh, "Gbit/s")
	b.ReportMetric(base, "wireguard-go-Gbit/s")
	b.ReportMetric(mesh/base, "x-wireguard-go")
	b.Logf("TCP over the mesh (kernel TUN): %.2f Gbit/s; stock wireguard-go + wg: %.2f Gbit/s; ratio %.2f× (target ≥ 1.0×)", mesh, base, mesh/base)
}
