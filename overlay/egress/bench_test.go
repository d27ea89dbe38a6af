package egress_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"meshwork.dev/overlay/egress"
	"meshwork.dev/workspace/wsnet"
)

// BenchmarkEgress measures, in one lab and one run, TCP throughput from a workspace to the
// internet host through its pinned exit against the same workspace unpinned (through the
// machine's NAT), alternating (target ≥ 0.8×); and the time from Pin to a passing Verify
// (target p50 ≤ 1 s).
func BenchmarkEgress(b *testing.B) {
	e := newEgressLab(b)
	ours, _ := egress.NewPrivateKey()
	x := e.exit(b, "egx-x1", "10.99.1.1/24", ours.Public())
	ws := e.workspace(b, "100.64.0.7")
	srv := e.in.Host.Start(nil, "iperf3", "-s", "-B", e.in.Addr.String())
	defer srv.Stop()
	stock := stockPeer(b, e, x) // the workmachine itself, through stock wireguard-go to the exit
	exitSrv := x.host.Start(nil, "iperf3", "-s", "-B", x.inner.Addr().String())
	defer exitSrv.Stop()

	secs := 3
	if b.N == 1 {
		secs = 1 // a correctness run
	}
	var pinned, nat, toExit, stockToExit float64
	var ready []time.Duration
	for range b.N {
		nat += wsIperf(b, ws, e.in.Addr.String(), secs)
		tun, took := pinVerified(b, e, ws, x.spec(ours), e.verification(x.public))
		ready = append(ready, took)
		pinned += wsIperf(b, ws, e.in.Addr.String(), secs)
		toExit += wsIperf(b, ws, x.inner.Addr().String(), secs)
		stockToExit += iperfFrom(b, []string{"ip", "netns", "exec", e.wm.Netns()}, stock, secs)
		if err := tun.Close(); err != nil {
			b.Fatal(err)
		}
	}
	for range 9 - min(b.N, 9) { // enough samples for a median
		tun, took := pinVerified(b, e, ws, x.spec(ours), e.verification(x.public))
		ready = append(ready, took)
		tun.Close()
	}
	n := float64(b.N)
	pinned, nat, toExit, stockToExit = pinned/n, nat/n, toExit/n, stockToExit/n
	slices.Sort(ready)
	p50 := ready[len(ready)/2]
	b.ReportMetric(pinned, "pinned-Gbit/s")
	b.ReportMetric(nat, "nat-Gbit/s")
	b.ReportMetric(pinned/nat, "x-nat")
	b.ReportMetric(toExit/stockToExit, "x-wireguard-go")
	b.ReportMetric(float64(p50.Microseconds())/1000, "pin-verified-p50-ms")
	b.Logf("TCP workspace → internet through its exit: %.2f Gbit/s; unpinned through the machine's NAT: %.2f Gbit/s; ratio %.2f× (target ≥ 0.8×). Pin → verified egress p50 %v over %d (target ≤ 1 s)",
		pinned, nat, pinned/nat, p50.Round(time.Millisecond), len(ready))
	b.Logf("to the exit's own tunnel address: the workspace's tunnel %.2f Gbit/s, stock wireguard-go + wg from the workmachine %.2f Gbit/s: %.2f×",
		toExit, stockToExit, toExit/stockToExit)
}

// pinVerified pins ws and returns its tunnel once Verify passes, with the time that took.
func pinVerified(b *testing.B, e *egressLab, ws wsnet.Config, spec egress.Spec, v egress.Verification) (*egress.Tunnel, time.Duration) {
	start := time.Now()
	var tun *egress.Tunnel
	if err := e.wm.Do(func() (err error) { tun, err = egress.Pin(ws, spec); return err }); err != nil {
		b.Fatal(err)
	}
	v.Timeout = time.Second
	eventually(b, 30*time.Second, "verified egress", func() error { return egress.Verify(b.Context(), ws, v) })
	return tun, time.Since(start)
}

// wsIperf runs iperf3 from inside workspace c to server for secs seconds and returns Gbit/s.
func wsIperf(b *testing.B, c wsnet.Config, server string, secs int) float64 {
	return iperfFrom(b, []string{"ip", "netns", "exec", c.Netns}, server, secs)
}

// stockPeer joins the workmachine to exit x with stock wireguard-go and wg (one more peer of
// x, at the tunnel's third address) and returns x's tunnel address, reached through it.
func stockPeer(b *testing.B, e *egressLab, x *exit) string {
	key, _ := egress.NewPrivateKey()
	dev := "egx-wb-" + e.tag
	addr := x.wsAddr().Addr().Next()
	ctx := b.Context()
	if _, err := x.host.Run(ctx, "wg", "set", x.dev, "peer", key.Public().String(), "allowed-ips", addr.String()+"/32"); err != nil {
		b.Fatal(err)
	}
	e.wm.Start([]string{"WG_PROCESS_FOREGROUND=1"}, e.wg, "-f", dev)
	keyFile := filepath.Join(b.TempDir(), "key")
	os.WriteFile(keyFile, []byte(key.Base64()), 0o600)
	var err error
	for range 50 { // until wireguard-go made the interface
		if _, err = e.wm.Run(ctx, "wg", "set", dev, "private-key", keyFile, "peer", x.key.Public().String(),
			"endpoint", netip.AddrPortFrom(x.public, 51820).String(), "allowed-ips", x.inner.Addr().String()+"/32"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		b.Fatal(err)
	}
	for _, args := range [][]string{{"addr", "add", addr.String() + "/24", "dev", dev}, {"link", "set", dev, "up"}} {
		if _, err := e.wm.Run(ctx, "ip", args...); err != nil {
			b.Fatal(err)
		}
	}
	return x.inner.Addr().String()
}

// iperfFrom runs iperf3 with the command prefix in (entering a namespace) to server for secs
// seconds and returns Gbit/s.
func iperfFrom(b *testing.B, in []string, server string, secs int) float64 {
	ctx, cancel := context.WithTimeout(b.Context(), time.Duration(secs+30)*time.Second)
	defer cancel()
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	var err error
	for range 50 { // until the server listens
		var out []byte
		args := append(in[1:], "iperf3", "-c", server, "-t", fmt.Sprint(secs), "-J")
		out, err = exec.CommandContext(ctx, in[0], args...).Output()
		r.Error = ""
		if err == nil {
			if err = json.Unmarshal(out, &r); err == nil && r.Error != "" {
				err = errors.New(r.Error)
			}
		}
		if err == nil && r.End.SumReceived.BitsPerSecond > 0 {
			return r.End.SumReceived.BitsPerSecond / 1e9
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("iperf3 from %v to %s: %v", in, server, err)
	return 0
}
