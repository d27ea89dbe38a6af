package replica

import (
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// echoFSM answers each entry with its own data and counts the entries it was handed.
type echoFSM struct {
	mu      sync.Mutex
	applied int
}

func (f *echoFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied++
	return string(l.Data)
}
func (f *echoFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, fmt.Errorf("no snapshots") }
func (f *echoFSM) Restore(io.ReadCloser) error         { return nil }

func singleNode(t *testing.T, fsm raft.FSM) *raft.Raft {
	t.Helper()
	c := raft.DefaultConfig()
	c.LocalID = "a"
	c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	c.LogOutput = io.Discard
	store := raft.NewInmemStore()
	_, tr := raft.NewInmemTransport("a")
	r, err := raft.NewRaft(c, fsm, store, store, raft.NewInmemSnapshotStore(), tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown().Error() })
	r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "a", Address: tr.LocalAddr()}}})
	for deadline := time.Now().Add(5 * time.Second); r.State() != raft.Leader; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
	}
	return r
}

// TestProposerGroups: concurrent commands each get their own answer however they are
// grouped, a lone one is not held back, and a failure reaches every command of its group.
func TestProposerGroups(t *testing.T) {
	fsm := &echoFSM{}
	p := &proposer{raft: singleNode(t, fsm), depth: 2}

	start := time.Now()
	if resp, err := p.apply([]byte("alone"), time.Second); err != nil || resp != "alone" {
		t.Fatalf("a lone command: %v, %v", resp, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("a lone command took %v", d)
	}

	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			want := fmt.Sprint("cmd-", i)
			if resp, err := p.apply([]byte(want), 5*time.Second); err != nil || resp != want {
				t.Errorf("%s answered %v, %v", want, resp, err)
			}
		})
	}
	wg.Wait()
	idle := func() (int, int) { // the last committer returns just after its callers
		for deadline := time.Now().Add(time.Second); ; time.Sleep(time.Millisecond) {
			p.mu.Lock()
			inflight, queued := p.inflight, len(p.queue)
			p.mu.Unlock()
			if inflight == 0 || time.Now().After(deadline) {
				return inflight, queued
			}
		}
	}
	fsm.mu.Lock()
	applied := fsm.applied
	fsm.mu.Unlock()
	if inflight, queued := idle(); applied != 201 || inflight != 0 || queued != 0 {
		t.Errorf("applied %d of 201, %d groups still in flight, %d queued", applied, inflight, queued)
	}

	p.raft.Shutdown().Error()
	for range 3 {
		wg.Go(func() {
			if _, err := p.apply([]byte("late"), time.Second); err == nil {
				t.Errorf("a command after shutdown succeeded")
			}
		})
	}
	wg.Wait()
}
