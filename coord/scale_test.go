package coord

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
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

func newSimNode(b *testing.B, ctx context.Context, url string, serverKey key.MachinePublic, dialer *tsdial.Dialer, authKey, name string) *simNode {
	nc, err := ts2021.NewClient(ts2021.ClientOpts{ServerURL: url, PrivKey: key.NewMachine(), ServerPubKey: serverKey,
		Dialer: dialer, Logf: func(string, ...any) {}})
	if err != nil {
		b.Fatal(err)
	}
	n := &simNode{nc: nc, nodeKey: key.NewNode().Public(), seen: make(chan string, 16)}
	reg := &tailcfg.RegisterRequest{Version: tailcfg.CurrentCapabilityVersion, NodeKey: n.nodeKey,
		Auth: &tailcfg.RegisterResponseAuth{AuthKey: authKey}, Hostinfo: &tailcfg.Hostinfo{Hostname: name}}
	resp, err := nc.Post(ctx, "/machine/register", n.nodeKey, reg)
	if err != nil {
		b.Fatal(err)
	}
	var rr tailcfg.RegisterResponse
	json.NewDecoder(resp.Body).Decode(&rr)
	resp.Body.Close()
	if rr.Error != "" {
		b.Fatalf("register %s: %s", name, rr.Error)
	}
	return n
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

// BenchmarkMapPropagation: 1,000 light protocol clients hold map streams on one replica;
// one more node joins; how long until every stream has it (target p99 ≤ 1 s), and what the
// change cost coord.
func BenchmarkMapPropagation(b *testing.B) {
	const peers = 1000
	url, admin := startCoordB(b)
	c := &api.Client{Base: url, Token: admin}
	var k api.NewAuthKey
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.Do(ctx, "POST", "/v1/authkeys", api.CreateAuthKey{Reusable: true}, &k); err != nil {
		b.Fatal(err)
	}
	var keyResp tailcfg.OverTLSPublicKeyResponse
	resp, err := http.Get(url + "/key?v=" + fmt.Sprint(tailcfg.CurrentCapabilityVersion))
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
	var ready sync.WaitGroup
	for i := range nodes {
		nodes[i] = newSimNode(b, ctx, url, keyResp.PublicKey, dialer, k.Key, fmt.Sprint("sim", i))
	}
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

	for i := range b.N {
		name := fmt.Sprint("joiner", i)
		cpu0, start := cpuTime(), time.Now()
		newSimNode(b, ctx, url, keyResp.PublicKey, dialer, k.Key, name)
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
		cpu := cpuTime() - cpu0
		slices.Sort(lat)
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		b.ReportMetric(p99.Seconds(), "s-p99")
		b.Logf("one join → in all %d streams: p50 %v, p99 %v (target p99 ≤ 1 s); CPU for the change %v (this process: coord and the clients); memory per streaming node ~%d KiB",
			peers, p50.Round(time.Millisecond), p99.Round(time.Millisecond), cpu.Round(time.Millisecond),
			(heapAfter.HeapAlloc-heapBefore.HeapAlloc)/peers/1024)
	}
}
