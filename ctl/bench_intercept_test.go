package ctl

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkIntercept/proxy: requests that a personal intercept does not match, through its
// proxy, beside the same requests straight to the service before the intercept, in the same
// run, from a laptop over the mesh on one keep-alive connection (target ≥ 0.8× req/s,
// ≤ +0.2 ms p50). BenchmarkIntercept/global: TCP throughput from the environment's client
// service to a global intercept's workspace on another machine (through the service's DNAT),
// beside the plain mesh between the same two namespaces' machines: the service itself to
// the workspace (target ≥ 0.9×).
func BenchmarkIntercept(b *testing.B) {
	importEnvImages(b, "")
	ml := newMeshLab(b)
	wm1, wm2 := ml.workmachine(b, "ibwm1"), ml.workmachine(b, "ibwm2")
	lp := ml.laptop(b, "iblp", ml.in.PublicHost("iblp"))
	file := filepath.Join(b.TempDir(), "compose.yaml")
	if err := os.WriteFile(file, []byte(interceptCompose), 0o644); err != nil {
		b.Fatal(err)
	}
	ml.mustCtl(ml.coord, "env", "create", "ibshop", "-f", file, "--machine", "ibwm1")
	ml.mustCtl(ml.coord, "ws", "create", "ibws", "--machine", "ibwm2", "--image", whoamiImage)
	shop := ml.envStatus(b, "ibshop")
	apiAddr := net.JoinHostPort(service(b, shop, "api").IPv4, "8080")
	ws := ml.workspace(b, "ibws")
	to := map[string]int{"client": wm1.servicePID(b, "ibshop", "client"), "api": wm1.servicePID(b, "ibshop", "api"), "ws": wm2.pid(b, "ibws")}

	b.Run("proxy", func(b *testing.B) {
		c := httpVia(lp.host, false)
		url := "http://" + apiAddr + "/"
		n := 2000 * max(b.N, 1)
		eventually(b, 30*time.Second, "the laptop reaches api", func() error { _, err := who(c, url, "", ""); return err })
		direct := timeRequests(b, c, url, n)
		ml.mustCtl(ml.coord, "intercept", "start", "ibshop/api:8080", "--to", "ibws:3000", "--header", "X-Dev=bench", "--name", "ibproxy")
		c.CloseIdleConnections() // a connection open before the proxy keeps going straight to api
		eventually(b, 10*time.Second, "the proxy in place", func() error {
			if w, err := who(c, url, "X-Dev", "bench"); err != nil || !strings.HasPrefix(w, "ibws ") {
				return fmt.Errorf("%q %v", w, err)
			}
			return nil
		})
		proxied := timeRequests(b, c, url, n)
		ml.mustCtl(ml.coord, "intercept", "stop", "ibproxy")
		d50, d99, drate := direct.stats()
		p50, p99, prate := proxied.stats()
		b.ReportMetric(prate/drate, "x-req/s")
		b.ReportMetric(float64((p50-d50).Microseconds())/1000, "ms-over-p50")
		b.ReportMetric(float64(p50.Microseconds())/1000, "ms-proxy-p50")
		b.ReportMetric(float64(d50.Microseconds())/1000, "ms-direct-p50")
		b.Logf("%d requests not matching a personal intercept: through its proxy %.0f req/s, p50 %v p99 %v; straight to the service %.0f req/s, p50 %v p99 %v: %.2f× req/s, %+v p50 (target ≥ 0.8×, ≤ +0.2 ms)",
			n, prate, p50, p99, drate, d50, d99, prate/drate, p50-d50)
	})

	b.Run("global", func(b *testing.B) {
		size := 512 << 20
		ml.mustCtl(ml.coord, "intercept", "start", "ibshop/api:8080", "--to", "ibws:3000", "--name", "ibglobal")
		plain := nsUpload(b, to["api"], "http://"+net.JoinHostPort(ws.IPv4, "3000")+"/sink", size) // the intercept lets api reach ibws:3000
		diverted := nsUpload(b, to["client"], "http://"+apiAddr+"/sink", size)
		ml.mustCtl(ml.coord, "intercept", "stop", "ibglobal")
		b.ReportMetric(diverted, "Gbit/s")
		b.ReportMetric(plain, "mesh-Gbit/s")
		b.ReportMetric(diverted/plain, "x-mesh")
		b.Logf("TCP client service → api:8080 diverted to the workspace on the other machine %.2f Gbit/s; plain mesh api → the workspace %.2f Gbit/s: %.2f× (target ≥ 0.9×)",
			diverted, plain, diverted/plain)
	})
}

// requestTimes are the latencies of requests made one after another, and how long they took.
type requestTimes struct {
	each  []time.Duration
	total time.Duration
}

func (r requestTimes) stats() (p50, p99 time.Duration, perSec float64) {
	s := slices.Clone(r.each)
	slices.Sort(s)
	return s[len(s)/2], s[min(len(s)-1, len(s)*99/100)], float64(len(s)) / r.total.Seconds()
}

// timeRequests makes n requests to url with c, one after another, none matching an intercept.
func timeRequests(b *testing.B, c *http.Client, url string, n int) requestTimes {
	b.Helper()
	var r requestTimes
	start := time.Now()
	for range n {
		t := time.Now()
		if w, err := who(c, url, "", ""); err != nil || !strings.HasPrefix(w, "api ") {
			b.Fatalf("request: %q %v", w, err)
		}
		r.each = append(r.each, time.Since(t))
	}
	r.total = time.Since(start)
	return r
}

// nsUpload posts size zero bytes to url with the host's curl in process pid's network
// namespace (an upload to whoami's /sink) and returns Gbit/s.
func nsUpload(b *testing.B, pid int, url string, size int) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "-t", fmt.Sprint(pid), "-n", "--",
		"curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{speed_upload}", "-T", "-", "-X", "POST", url)
	cmd.Stdin = io.LimitReader(zeros{}, int64(size))
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("upload to %s: %v %s", url, err, out)
	}
	var bytesPerSec float64
	if _, err := fmt.Sscan(string(out), &bytesPerSec); err != nil || bytesPerSec <= 0 {
		b.Fatalf("upload to %s: speed %q %v", url, out, err)
	}
	return bytesPerSec * 8 / 1e9
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
