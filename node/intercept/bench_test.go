package intercept_test

import (
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"meshwork.dev/node/intercept"
)

// BenchmarkProxy: requests no route takes, through the personal-intercept proxy vs straight to
// the service, alternating, in the same run: requests/s (4 clients on keep-alive connections)
// and p50/p99 latency, each beside its baseline as a ratio.
func BenchmarkProxy(b *testing.B) {
	svc, ws := newUpstream(b, "service"), newUpstream(b, "workspace")
	p := &intercept.Proxy{Service: svc.addr}
	p.SetRoutes([]intercept.Route{alice(ws.addr)})
	via := "http://" + startProxy(b, p) + "/"
	direct := "http://" + svc.addr + "/"
	const clients, rounds = 4, 5
	n := 500 * b.N
	var lat [2][]time.Duration
	var took [2]time.Duration
	b.ResetTimer()
	for range rounds {
		for i, url := range []string{direct, via} {
			l, d := load(b, url, clients, n)
			lat[i] = append(lat[i], l...)
			took[i] += d
		}
	}
	b.StopTimer()
	total := float64(rounds * clients * n)
	rps := [2]float64{total / took[0].Seconds(), total / took[1].Seconds()}
	d50, d99 := pct(lat[0], 50), pct(lat[0], 99)
	p50, p99 := pct(lat[1], 50), pct(lat[1], 99)
	b.ReportMetric(rps[1], "req/s-proxy")
	b.ReportMetric(rps[0], "req/s-direct")
	b.ReportMetric(rps[1]/rps[0], "proxy/direct")
	b.ReportMetric(float64(p50-d50)/1e3, "us-p50-added")
	b.Logf("non-matching requests, %d clients × %d × %d rounds: through the proxy %.0f req/s, p50 %v p99 %v; "+
		"straight to the service %.0f req/s, p50 %v p99 %v: %.2f× req/s (target ≥ 0.8×), p50 +%v (target ≤ +0.2 ms)",
		clients, n, rounds, rps[1], p50, p99, rps[0], d50, d99, rps[1]/rps[0], p50-d50)
}

// load runs clients goroutines each making n GETs to url on its own keep-alive connection and
// returns every request's latency and the wall time.
func load(b *testing.B, url string, clients, n int) ([]time.Duration, time.Duration) {
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Go(func() {
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer c.CloseIdleConnections()
			l := make([]time.Duration, 0, n)
			for range n {
				t0 := time.Now()
				if _, err := tryGet(b.Context(), c, url); err != nil {
					b.Error(err)
					return
				}
				l = append(l, time.Since(t0))
			}
			mu.Lock()
			all = append(all, l...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return all, time.Since(start)
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}
