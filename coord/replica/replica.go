// Package replica is one coord replica's Raft node: durable log and snapshots on disk,
// coord-to-coord traffic over the QUIC transport, bootstrap and join with the cluster token,
// membership, leader forwarding and read barriers. What the log holds is the caller's business:
// it passes a raft.FSM and handles the RPC methods it forwards.
package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/migrate"
	"github.com/hashicorp/raft-wal/segment"

	"meshwork.dev/coord/peer"
)

// Config says how to run a replica.
type Config struct {
	// ID names the replica in the cluster; default: the name saved in the state directory,
	// else the host name.
	ID string
	// StateDir holds the Raft log, snapshots, TLS identity and ID. Required.
	StateDir string
	// ClusterAddr is the UDP address for coord-to-coord traffic; peers dial it as given, so it
	// must be reachable from them (not ":port"). Required.
	ClusterAddr string
	// HTTPAddr is the replica's admin API address, advertised to the others.
	HTTPAddr string
	// Join is a member's admin API URL, used on first start to join its cluster with JoinToken.
	// Ignored once the replica has state.
	Join      string
	JoinToken string
	// InsecureJoin allows joining over plain HTTP to another machine (labs only): the
	// member's answer carries the cluster's CA key.
	InsecureJoin bool
	// HeartbeatTimeout is how long a follower waits to hear from the leader before it calls
	// an election (and the election's own timeout); default 400 ms, so writes resume about a
	// second after a leader dies. Raise it where replicas share too few cores to answer in time.
	HeartbeatTimeout time.Duration
	// Logf logs; nil means log.Printf.
	Logf func(format string, args ...any)
}

// FSM is the state machine a replica runs: a raft.FSM that says how far it has applied.
// (raft's own AppliedIndex counts entries handed to the FSM, not yet applied.)
type FSM interface {
	raft.FSM
	// AppliedIndex is the index of the last command or configuration entry applied.
	AppliedIndex() uint64
	// WaitApplied blocks until the entry at idx is applied, or ctx ends.
	WaitApplied(ctx context.Context, idx uint64) error
}

// Replica is a running Raft node. Make it with Open.
type Replica struct {
	cfg  Config
	fsm  FSM
	id   *peer.Identity
	tr   *peer.Transport
	raft *raft.Raft
	prop *proposer

	wal     *wal.WAL // the Raft log
	walMeta *metadb.BoltMetaDB
	stable  *raftboltdb.BoltStore // term and vote
	fresh   bool                  // this process bootstrapped a new cluster

	joinPeers []string // cluster addresses of the members, when joining

	closeOnce sync.Once
	closeErr  error
}

// Timing: a dead leader is noticed in about HeartbeatTimeout and replaced within about
// twice that (the target is writes again within 1.5 s).
func raftConfig(id string, heartbeat time.Duration, logger hclog.Logger) *raft.Config {
	if heartbeat <= 0 {
		heartbeat = 400 * time.Millisecond
	}
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(id)
	c.HeartbeatTimeout = heartbeat
	c.ElectionTimeout = heartbeat
	c.LeaderLeaseTimeout = heartbeat * 3 / 4
	c.CommitTimeout = 5 * time.Millisecond
	c.MaxAppendEntries = 512
	c.BatchApplyCh = true
	c.SnapshotThreshold = 16384
	c.TrailingLogs = 10240
	c.Logger = logger
	return c
}

// Open starts the replica: restart from StateDir, bootstrap a new cluster (no state, no
// Join), or join the cluster at Join.
func Open(ctx context.Context, cfg Config, fsm FSM) (*Replica, error) {
	if cfg.StateDir == "" || cfg.ClusterAddr == "" {
		return nil, errors.New("replica: StateDir and ClusterAddr are required")
	}
	if cfg.Join != "" {
		if err := CheckJoinURL(cfg.Join, cfg.InsecureJoin); err != nil {
			return nil, fmt.Errorf("replica: %w", err)
		}
	}
	if cfg.Logf == nil {
		cfg.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "raft"), 0o700); err != nil {
		return nil, err
	}
	r := &Replica{cfg: cfg, fsm: fsm}
	if err := r.loadID(); err != nil {
		return nil, err
	}
	if err := r.start(ctx, fsm); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Replica) start(ctx context.Context, fsm FSM) error {
	if err := r.openStores(ctx); err != nil {
		return err
	}
	fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(r.cfg.StateDir, "raft"), 2, r.hclog("snapshots"))
	if err != nil {
		return fmt.Errorf("replica: snapshots: %w", err)
	}
	if err := private(filepath.Join(r.cfg.StateDir, "raft")); err != nil {
		return fmt.Errorf("replica: state directory: %w", err)
	}
	snaps := privateSnapshots{FileSnapshotStore: fileSnaps, dir: filepath.Join(r.cfg.StateDir, "raft", "snapshots")}
	hasState, err := raft.HasExistingState(r.wal, r.stable, snaps)
	if err != nil {
		return err
	}
	if err := r.identity(ctx, hasState); err != nil {
		return err
	}
	if r.tr, err = peer.Listen(r.cfg.ClusterAddr, r.id, r.cfg.Logf); err != nil {
		return fmt.Errorf("replica: cluster address: %w", err)
	}
	r.tr.Handle(methodAddVoter, r.handleAddVoter)
	r.tr.Handle(methodReadIndex, r.handleReadIndex)
	r.tr.Handle(methodRemove, r.handleRemove)
	nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: r.tr.RaftLayer(), MaxPool: 4, Timeout: 5 * time.Second, Logger: r.hclog("net"),
	})
	// The leader reads back what it just wrote to replicate it: keep recent entries in memory.
	cache, err := raft.NewLogCache(4096, r.wal)
	if err != nil {
		return err
	}
	if r.raft, err = raft.NewRaft(raftConfig(r.cfg.ID, r.cfg.HeartbeatTimeout, r.hclog("raft")), fsm, cache, r.stable, snaps, nt); err != nil {
		return fmt.Errorf("replica: raft: %w", err)
	}
	r.prop = &proposer{raft: r.raft, depth: 2}
	switch {
	case hasState:
		r.cfg.Logf("replica %s: restarted from %s", r.cfg.ID, r.cfg.StateDir)
	case r.cfg.Join == "":
		r.fresh = true
		self := raft.Server{ID: raft.ServerID(r.cfg.ID), Address: raft.ServerAddress(r.cfg.ClusterAddr)}
		if err := r.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{self}}).Error(); err != nil {
			return fmt.Errorf("replica: bootstrap: %w", err)
		}
		r.cfg.Logf("replica %s: bootstrapped a new cluster", r.cfg.ID)
	default:
		if err := r.askToJoin(ctx); err != nil {
			return err
		}
	}
	return nil
}

// openStores opens the Raft log, an append-only write-ahead log (raft-wal: one sync per
// append, where BoltDB's copy-on-write tree takes two and rewrites pages; BoltDB's commits
// were the largest share of a replica's CPU per admin write), and the stable store for term
// and vote (raft-boltdb). A state directory from before the WAL keeps its log in the Bolt file: it
// is copied over once, then dropped there.
func (r *Replica) openStores(ctx context.Context) error {
	dir := filepath.Join(r.cfg.StateDir, "raft")
	var err error
	if r.stable, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")}); err != nil {
		return fmt.Errorf("replica: stable store: %w", err)
	}
	walDir := filepath.Join(dir, "wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return err
	}
	r.walMeta = &metadb.BoltMetaDB{} // the WAL's Close leaves it open: Close closes it
	if r.wal, err = wal.Open(walDir, wal.WithMetaStore(r.walMeta),
		wal.WithSegmentFiler(segment.NewFiler(walDir, datasyncFS{fs.New()})),
		wal.WithSegmentSize(16<<20), wal.WithLogger(r.hclog("wal"))); err != nil {
		return fmt.Errorf("replica: raft log: %w", err)
	}
	old, err := r.stable.LastIndex()
	if err != nil || old == 0 {
		return err
	}
	if last, err := r.wal.LastIndex(); err != nil || last != 0 {
		return err
	}
	first, err := r.stable.FirstIndex()
	if err != nil {
		return err
	}
	r.cfg.Logf("replica %s: moving the Raft log (entries %d to %d) from raft.db to the write-ahead log", r.cfg.ID, first, old)
	if err := migrate.CopyLogs(ctx, r.wal, r.stable, 4<<20, nil); err != nil {
		return fmt.Errorf("replica: moving the Raft log to the write-ahead log: %w", err)
	}
	return r.stable.DeleteRange(first, old)
}

// Bootstrapped reports whether this process made a new cluster (and so must create its
// first admin).
func (r *Replica) Bootstrapped() bool { return r.fresh }

// ID is the replica's ID.
func (r *Replica) ID() string { return r.cfg.ID }

// Raft is the underlying Raft node, for status and metrics.
func (r *Replica) Raft() *raft.Raft { return r.raft }

// Apply commits a log entry through Raft on this replica, which must lead, and returns the
// FSM's response. Concurrent calls are committed in groups.
func (r *Replica) Apply(data []byte, timeout time.Duration) (any, error) {
	return r.prop.apply(data, timeout)
}

// Transport is the coord-to-coord transport, for the caller's RPC methods.
func (r *Replica) Transport() *peer.Transport { return r.tr }

// Close stops Raft and the transport. Idempotent.
func (r *Replica) Close() error {
	r.closeOnce.Do(func() {
		if r.raft != nil {
			r.closeErr = r.raft.Shutdown().Error()
		}
		if r.tr != nil {
			r.tr.Close()
		}
		if r.wal != nil {
			r.wal.Close()
		}
		if r.walMeta != nil {
			r.walMeta.Close()
		}
		if r.stable != nil {
			r.stable.Close()
		}
	})
	return r.closeErr
}

// hclog adapts Logf for hashicorp/raft, at warning level and above.
func (r *Replica) hclog(name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name: "raft-" + name, Level: hclog.Warn, Output: logfWriter(r.cfg.Logf),
	})
}

// logfWriter turns a Logf into the io.Writer hclog wants.
type logfWriter func(string, ...any)

func (w logfWriter) Write(p []byte) (int, error) {
	w("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// loadID settles the replica's ID: flag, else saved, else host name; saved for next time.
func (r *Replica) loadID() error {
	path := filepath.Join(r.cfg.StateDir, "id")
	saved, err := os.ReadFile(path)
	switch {
	case err == nil && r.cfg.ID != "" && strings.TrimSpace(string(saved)) != r.cfg.ID:
		return fmt.Errorf("replica: --id %q but %s says %q; a replica keeps its ID (remove it from the cluster and start with an empty state directory to rename)", r.cfg.ID, path, strings.TrimSpace(string(saved)))
	case err == nil:
		r.cfg.ID = strings.TrimSpace(string(saved))
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	if r.cfg.ID == "" {
		if r.cfg.ID, err = os.Hostname(); err != nil {
			return err
		}
	}
	return os.WriteFile(path, []byte(r.cfg.ID+"\n"), 0o600)
}
