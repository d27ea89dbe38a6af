package coord

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tailscale.com/control/ts2021"
	"tailscale.com/net/netmon"
	"tailscale.com/net/tsdial"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	"meshwork.dev/coord/api"
)

// simNode is a light protocol client: a machine registered over ts2021 holding a map
// stream, no data plane.
type simNode struct {
	nc      *ts2021.Client
	nodeKey key.NodePublic
	seen    chan string // names of peers as they appear in its stream
}

// newSimNode registers a node called name through the replica at url, which will also
// serve its stream.
func newSimNode(ctx context.Context, url string, serverKey key.MachinePublic, dialer *tsdial.Dialer, authKey, name string) (*simNode, error) {
	nc, err := ts2021.NewClient(ts2021.ClientOpts{ServerURL: url, PrivKey: key.NewMachine(), ServerPubKey: serverKey,
		Dialer: dialer, Logf: func(string, ...any) {}})
	if err != nil {
		return nil, err
	}
	n := &simNode{nc: nc, nodeKey: key.NewNode().Public(), seen: make(chan string, 16)}
	reg := &tailcfg.RegisterRequest{Version: tailcfg.CurrentCapabilityVersion, NodeKey: n.nodeKey,
		Auth: &tailcfg.RegisterResponseAuth{AuthKey: authKey}, Hostinfo: &tailcfg.Hostinfo{Hostname: name}}
	resp, err := nc.Post(ctx, "/machine/register", n.nodeKey, reg)
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", name, err)
	}
	var rr tailcfg.RegisterResponse
	json.NewDecoder(resp.Body).Decode(&rr)
	resp.Body.Close()
	if rr.Error != "" {
		return nil, fmt.Errorf("register %s: %s", name, rr.Error)
	}
	return n, nil
}

// stream opens the node's map stream and reports peers it hears of on seen.
func (n *simNode) stream(ctx context.Context, ready *sync.WaitGroup) error {
	req := &tailcfg.MapRequest{Version: tailcfg.CurrentCapabilityVersion, NodeKey: n.nodeKey, Stream: true,
		DiscoKey: key.NewDisco().Public()}
	resp, err := n.nc.Post(ctx, "/machine/map", n.nodeKey, req)
	if err != nil {
		return err
	}
	go func() {
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		first := true
		for {
			var size [4]byte
			if _, err := io.ReadFull(br, size[:]); err != nil {
				return
			}
			msg := make([]byte, binary.LittleEndian.Uint32(size[:]))
			if _, err := io.ReadFull(br, msg); err != nil {
				return
			}
			if first {
				first = false
				ready.Done()
			}
			var mr tailcfg.MapResponse
			if json.Unmarshal(msg, &mr) != nil {
				continue
			}
			for _, p := range slices.Concat(mr.Peers, mr.PeersChanged) {
				select {
				case n.seen <- p.Name:
				default:
				}
			}
		}
	}()
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// freeAddrs picks a loopback TCP address for an admin API and one for a cluster port, which
// coord uses twice: QUIC on UDP and the DERP relay on TCP, so its number is free in both.
func freeAddrs(b testing.TB) (httpAddr, clusterAddr string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	httpAddr = ln.Addr().String()
	ln.Close()
	for range 100 {
		tcp, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		clusterAddr = tcp.Addr().String()
		udp, err := net.ListenPacket("udp", clusterAddr)
		tcp.Close()
		if err == nil {
			udp.Close()
			return httpAddr, clusterAddr
		}
	}
	b.Fatal("no loopback port free for both TCP and UDP in 100 tries")
	return "", ""
}

// startReplicas runs n coord replicas in this process, real Raft over QUIC on loopback: c1
// bootstraps, the others join it. It returns their URLs, once all are voters, and the
// admin key.
func startReplicas(b testing.TB, n int) ([]string, string) { return startReplicasWith(b, n, nil) }

// startReplicasWith is startReplicas with tweak applied to each replica's configuration.
func startReplicasWith(b testing.TB, n int, tweak func(*Config)) ([]string, string) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	dir := b.TempDir()
	start := func(id, join, token string) string {
		httpAddr, clusterAddr := freeAddrs(b)
		cfg := Config{ID: id, StateDir: filepath.Join(dir, id), HTTPAddr: httpAddr, ClusterAddr: clusterAddr,
			Join: join, JoinToken: token, Logf: func(string, ...any) {}} // three replicas' logs drown the figures
		if tweak != nil {
			tweak(&cfg)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := Run(ctx, cfg); err != nil && ctx.Err() == nil {
				b.Errorf("replica %s: %v", id, err)
			}
		}()
		return "http://" + httpAddr
	}
	urls := []string{start("c1", "", "")}
	var admin string
	waitUntil(b, 20*time.Second, "c1's admin.key", func() error {
		k, err := os.ReadFile(filepath.Join(dir, "c1", "admin.key"))
		admin = strings.TrimSpace(string(k))
		return err
	})
	c := &api.Client{Base: urls[0], Token: admin}
	var tok struct{ Token string }
	if err := c.Do(ctx, "GET", "/v1/cluster/token", nil, &tok); err != nil {
		b.Fatal(err)
	}
	for i := 2; i <= n; i++ {
		urls = append(urls, start(fmt.Sprint("c", i), urls[0], tok.Token))
	}
	for _, u := range urls {
		c := &api.Client{Base: u, Token: admin}
		waitUntil(b, 60*time.Second, u+" sees every replica", func() error {
			var st api.Cluster
			err := c.Do(ctx, "GET", "/v1/cluster", nil, &st)
			if err == nil && (len(st.Members) != n || st.Leader == "") {
				err = fmt.Errorf("members %v, leader %q", st.Members, st.Leader)
			}
			return err
		})
	}
	return urls, admin
}

// waitUntil retries f until it succeeds or limit passes, and returns how long it took.
func waitUntil(t testing.TB, limit time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v: %v", what, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkMapPropagation: 1,000 light protocol clients hold map streams spread over three
// coord replicas; one more node joins (through one replica); how long until every stream
// has it (target p99 ≤ 1 s), and what the change cost coord.
func BenchmarkMapPropagation(b *testing.B) {
	const peers = 1000
	urls, admin := startReplicas(b, 3)
	c := &api.Client{Base: urls[0], Token: admin}
	var k api.NewAuthKey
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.Do(ctx, "POST", "/v1/authkeys", api.CreateAuthKey{Reusable: true}, &k); err != nil {
		b.Fatal(err)
	}
	// Every replica presents the same control key (derived from the cluster CA).
	var keyResp tailcfg.OverTLSPublicKeyResponse
	resp, err := http.Get(urls[0] + "/key?v=" + fmt.Sprint(tailcfg.CurrentCapabilityVersion))
	if err != nil {
		b.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&keyResp)
	resp.Body.Close()
	dialer := tsdial.NewDialer(netmon.NewStatic())

	var heapBefore runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heapBefore)
	nodes := make([]*simNode, peers)
	errs := make([]error, peers)
	var reg sync.WaitGroup
	sem := make(chan struct{}, 16) // registrations are Raft writes: overlap them
	for i := range nodes {
		reg.Add(1)
		sem <- struct{}{}
		go func() {
			defer reg.Done()
			defer func() { <-sem }()
			nodes[i], errs[i] = newSimNode(ctx, urls[i%len(urls)], keyResp.PublicKey, dialer, k.Key, fmt.Sprint("sim", i))
		}()
	}
	reg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	var ready sync.WaitGroup
	ready.Add(peers)
	for _, n := range nodes {
		if err := n.stream(ctx, &ready); err != nil {
			b.Fatal(err)
		}
	}
	ready.Wait()
	var heapAfter runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heapAfter)
	for _, n := range nodes { // drain what the joins before the measurement announced
		for len(n.seen) > 0 {
			<-n.seen
		}
	}

	var p50s, p99s, cpus []time.Duration
	for i := range b.N {
		name := fmt.Sprint("joiner", i)
		cpu0, start := cpuTime(), time.Now()
		if _, err := newSimNode(ctx, urls[i%len(urls)], keyResp.PublicKey, dialer, k.Key, name); err != nil {
			b.Fatal(err)
		}
		lat := make([]time.Duration, 0, peers)
		for _, n := range nodes {
			deadline := time.After(30 * time.Second)
		wait:
			for {
				select {
				case got := <-n.seen:
					if got == name+".mesh.internal." {
						lat = append(lat, time.Since(start))
						break wait
					}
				case <-deadline:
					b.Fatalf("a stream never heard of %s", name)
				}
			}
		}
		cpus = append(cpus, cpuTime()-cpu0)
		slices.Sort(lat)
		p50s, p99s = append(p50s, lat[len(lat)/2]), append(p99s, lat[len(lat)*99/100])
	}
	p50, p99, cpu := median(p50s), median(p99s), median(cpus)
	perNode := float64(heapAfter.HeapAlloc-heapBefore.HeapAlloc) / peers / 1024
	b.ReportMetric(p50.Seconds(), "s-p50")
	b.ReportMetric(p99.Seconds(), "s-p99")
	b.ReportMetric(cpu.Seconds(), "cpu-s/change")
	b.ReportMetric(perNode, "KiB/node")
	b.Logf("one join → in all %d streams on %d replicas: p50 %v, p99 %v (target p99 ≤ 1 s); CPU for the change %v (this process: 3 replicas and the clients); memory per streaming node ~%.0f KiB (both sides)",
		peers, len(urls), p50.Round(time.Millisecond), p99.Round(time.Millisecond), cpu.Round(time.Millisecond), perNode)
}

func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}
