package replica

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// countFSM counts what it applies; its snapshots hold nothing.
type countFSM struct{ applied atomic.Uint64 }

func (f *countFSM) Apply(l *raft.Log) any               { f.applied.Store(l.Index); return nil }
func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return emptySnap{}, nil }
func (f *countFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }
func (f *countFSM) AppliedIndex() uint64                { return f.applied.Load() }
func (f *countFSM) WaitApplied(ctx context.Context, idx uint64) error {
	for f.applied.Load() < idx {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

type emptySnap struct{}

func (emptySnap) Persist(s raft.SnapshotSink) error { return s.Close() }
func (emptySnap) Release()                          {}

// TestStateModes: everything a replica writes — Raft log segments, their index, term and
// vote, snapshots, its TLS identity — is readable by its owner alone: files 0600, folders
// 0700, so another account on the machine reads neither the log nor the CA key.
func TestStateModes(t *testing.T) {
	dir := t.TempDir()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := udp.LocalAddr().String()
	udp.Close()
	r, err := Open(context.Background(), Config{ID: "c1", StateDir: filepath.Join(dir, "state"), ClusterAddr: addr, Logf: t.Logf}, &countFSM{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for deadline := time.Now().Add(10 * time.Second); !r.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
	}
	for i := range 20 {
		if _, err := r.Apply(fmt.Appendf(nil, "entry %d", i), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	n := 0
	filepath.WalkDir(filepath.Join(dir, "state"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		info, _ := d.Info()
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s: mode %04o, want %04o", path, got, want)
		}
		n++
		return nil
	})
	t.Logf("checked %d files and folders", n)
}
