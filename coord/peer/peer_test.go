package peer

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// cluster makes n transports on loopback sharing one CA.
func cluster(t *testing.T, n int) []*Transport {
	t.Helper()
	first, err := NewCluster("r0")
	if err != nil {
		t.Fatal(err)
	}
	var ts []*Transport
	for i := range n {
		id := first
		if i > 0 {
			id = join(t, first, fmt.Sprintf("r%d", i))
		}
		tr, err := Listen("127.0.0.1:0", id, t.Logf)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		ts = append(ts, tr)
	}
	return ts
}

// join issues an identity for name from admitter, as a joining replica gets one.
func join(t *testing.T, admitter *Identity, name string) *Identity {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	cert, err := admitter.Issue(name, pub)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, caKeyPEM := admitter.PEM()
	id, err := FromPEM(caPEM, caKeyPEM, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRPC(t *testing.T) {
	ts := cluster(t, 2)
	ts[1].Handle("echo", func(ctx context.Context, peer string, req []byte) ([]byte, error) {
		return []byte(peer + ":" + string(req)), nil
	})
	ts[1].Handle("fail", func(ctx context.Context, peer string, req []byte) ([]byte, error) {
		return nil, errors.New("no such workspace")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := ts[0].Call(ctx, ts[1].Addr(), "echo", []byte("hi"))
	if err != nil || string(got) != "r0:hi" {
		t.Fatalf("echo = %q, %v; want r0:hi (the caller's verified ID)", got, err)
	}
	_, err = ts[0].Call(ctx, ts[1].Addr(), "fail", nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Msg != "no such workspace" {
		t.Errorf("fail = %v; want RemoteError from the handler", err)
	}
	_, err = ts[0].Call(ctx, ts[1].Addr(), "missing", nil)
	if err == nil || !strings.Contains(err.Error(), "no RPC method") {
		t.Errorf("unknown method = %v", err)
	}
	if _, err := ts[0].Call(ctx, ts[1].Addr(), "echo", make([]byte, maxFrame+1)); err == nil {
		t.Errorf("oversized request accepted")
	}
}

// TestForeignCA checks that a replica from another cluster is refused both ways.
func TestForeignCA(t *testing.T) {
	ts := cluster(t, 1)
	var served atomic.Int32
	ts[0].Handle("echo", func(ctx context.Context, peer string, req []byte) ([]byte, error) {
		served.Add(1)
		return req, nil
	})
	other, err := NewCluster("rogue")
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := Listen("127.0.0.1:0", other, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	rogue.Handle("echo", func(ctx context.Context, peer string, req []byte) ([]byte, error) {
		served.Add(1)
		return req, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := rogue.Call(ctx, ts[0].Addr(), "echo", []byte("x")); err == nil {
		t.Errorf("rogue client was served")
	}
	if _, err := ts[0].Call(ctx, rogue.Addr(), "echo", []byte("x")); err == nil {
		t.Errorf("real client talked to a rogue server")
	}
	if served.Load() != 0 {
		t.Errorf("%d requests served across clusters", served.Load())
	}
}

func TestIdentitySaveLoad(t *testing.T) {
	id, err := NewCluster("c1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "c1" || !got.CA.Equal(id.CA) || string(got.CAKeyDER()) != string(id.CAKeyDER()) {
		t.Errorf("loaded identity differs: %s", got.ID)
	}
}

// counter is a trivial FSM.
type counter struct{ n atomic.Int64 }

func (c *counter) Apply(*raft.Log) any                 { return c.n.Add(1) }
func (c *counter) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (c *counter) Restore(io.ReadCloser) error         { return nil }

// TestRaft runs a real 3-node Raft cluster over the transport, kills the leader and checks
// the other two elect a new one and keep committing.
func TestRaft(t *testing.T) {
	ts := cluster(t, 3)
	var rafts []*raft.Raft
	var servers []raft.Server
	for i, tr := range ts {
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("r%d", i)), Address: raft.ServerAddress(tr.Addr())})
	}
	for i, tr := range ts {
		c := raft.DefaultConfig()
		c.LocalID = servers[i].ID
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 400*time.Millisecond, 400*time.Millisecond, 300*time.Millisecond
		c.LogOutput = io.Discard
		nt := raft.NewNetworkTransport(tr.RaftLayer(), 3, 5*time.Second, io.Discard)
		r, err := raft.NewRaft(c, &counter{}, raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore(), nt)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Shutdown().Error() })
		rafts = append(rafts, r)
	}
	if err := rafts[0].BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}
	leader := waitLeader(t, rafts, -1)
	for range 10 {
		if err := rafts[leader].Apply([]byte("x"), 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	rafts[leader].Shutdown().Error()
	ts[leader].Close()
	next := waitLeader(t, rafts, leader)
	if err := rafts[next].Apply([]byte("y"), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	t.Logf("leader killed → write committed by the new leader in %v", time.Since(start).Round(time.Millisecond))
}

func waitLeader(t *testing.T, rafts []*raft.Raft, dead int) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for i, r := range rafts {
			if i != dead && r.State() == raft.Leader {
				return i
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no leader within 15 s")
	return -1
}

func BenchmarkRPC(b *testing.B) {
	first, _ := NewCluster("r0")
	a, _ := Listen("127.0.0.1:0", first, b.Logf)
	defer a.Close()
	a.Handle("echo", func(ctx context.Context, peer string, req []byte) ([]byte, error) { return req, nil })
	ctx := context.Background()
	req := make([]byte, 256)
	for b.Loop() {
		if _, err := a.Call(ctx, a.Addr(), "echo", req); err != nil {
			b.Fatal(err)
		}
	}
}
