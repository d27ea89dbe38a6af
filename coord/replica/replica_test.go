package replica

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// TestLogMovesToWAL: a state directory from before the write-ahead log keeps its Raft log
// in raft.db; the first start moves it over whole, and later starts leave it be.
func TestLogMovesToWAL(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "raft"), 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft", "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(5); i <= 40; i++ { // a log compacted up to 4, as after a snapshot
		logs = append(logs, &raft.Log{Index: i, Term: 2, Type: raft.LogCommand, Data: fmt.Appendf(nil, "entry %d", i)})
	}
	if err := old.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := old.SetUint64([]byte("CurrentTerm"), 2); err != nil {
		t.Fatal(err)
	}
	old.Close()

	for start := range 2 {
		r := &Replica{cfg: Config{ID: "c1", StateDir: dir, Logf: t.Logf}}
		if err := r.openStores(context.Background()); err != nil {
			t.Fatal(err)
		}
		first, _ := r.wal.FirstIndex()
		last, _ := r.wal.LastIndex()
		if first != 5 || last != 40 {
			t.Fatalf("start %d: the log holds %d to %d, want 5 to 40", start, first, last)
		}
		var l raft.Log
		if err := r.wal.GetLog(17, &l); err != nil || string(l.Data) != "entry 17" || l.Term != 2 {
			t.Errorf("start %d: entry 17 = %q (term %d), %v", start, l.Data, l.Term, err)
		}
		if n, _ := r.stable.LastIndex(); n != 0 {
			t.Errorf("start %d: raft.db still holds entries up to %d", start, n)
		}
		if term, err := r.stable.GetUint64([]byte("CurrentTerm")); term != 2 {
			t.Errorf("start %d: term %d (%v), want 2 kept in the stable store", start, term, err)
		}
		r.Close()
	}
}
