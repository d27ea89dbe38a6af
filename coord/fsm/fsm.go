package fsm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
)

// An op applies one kind of command inside a write transaction and returns the object to
// answer with and its name for the audit log.
type op struct {
	version int // the newest payload version this build understands
	apply   func(t *tx) (value any, object string, err error)
}

// tx is a command being applied: its write transaction, the command and its log index.
type tx struct {
	*memdb.Txn
	b      *batch
	c      *Command
	index  uint64
	wrote  bool   // an op must not fail once it has written
	detail string // more for the audit event than the object's name
}

// decode unmarshals the command's payload. A field this build does not know means the
// command comes from a newer one: errNewerPayload, so the replica stops instead of applying
// half of it and drifting from the others.
func (t *tx) decode(v any) error {
	dec := json.NewDecoder(bytes.NewReader(t.c.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if strings.HasPrefix(err.Error(), "json: unknown field") {
			return fmt.Errorf("%s: %w: %v", t.c.Op, errNewerPayload, err)
		}
		return errorf(CodeInvalid, "%s: %v", t.c.Op, err)
	}
	return nil
}

var errNewerPayload = errors.New("payload from a newer version")

// put inserts or replaces obj in table and records the table's change index (at the end of
// the batch: only its last change counts). Ops write through put, add and del only (get
// relies on it).
func (t *tx) put(table string, obj any) { t.write(table, obj, true) }

// add inserts obj, whose ID the op has just checked is free, as put does but without
// looking for a row it replaces.
func (t *tx) add(table string, obj any) { t.write(table, obj, false) }

func (t *tx) write(table string, obj any, replacing bool) {
	t.wrote = true
	if n, ok := obj.(*Node); ok {
		n.ModifyIndex = t.index
	}
	t.b.note(table, obj, true, replacing)
	must(t.Insert(table, obj))
	t.b.changed(table, t.index)
}

// del removes obj from table and records the table's change index, as put does.
func (t *tx) del(table string, obj any) {
	t.wrote = true
	if n, ok := obj.(*Node); ok {
		must(t.Insert(tGone, &NodeGone{ID: n.ID, Index: t.index}))
	}
	t.b.note(table, obj, false, false)
	must(t.Delete(table, obj))
	t.b.changed(table, t.index)
}

// FSM applies the Raft log to a Store. It implements raft.FSM and raft.BatchingFSM.
type FSM struct {
	// AuditKeep is how many log entries back audit events are kept; default 1,000,000.
	// Every replica must use the same value (it shapes the replicated state).
	AuditKeep uint64

	store       *Store
	hist        history               // as the FSM has written it; the store has it as of the last batch
	keys        map[string]*idemEntry // hist.idem by key
	applied     atomic.Uint64         // index of the last log entry applied to the store
	notifyMu    sync.Mutex            // guards notify
	notify      chan struct{}         // closed when applied moves; nil until someone waits
	unsupported atomic.Bool
	logf        func(string, ...any)
}

// New makes an FSM over an empty store. logf may be nil.
func New(logf func(string, ...any)) *FSM {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &FSM{store: newStore(), keys: map[string]*idemEntry{}, logf: logf}
}

// Store is the state the FSM keeps.
func (f *FSM) Store() *Store { return f.store }

// Unsupported reports whether the log held a command this build does not understand: the
// replica is behind the others and must be upgraded; its state stopped at that command.
func (f *FSM) Unsupported() bool { return f.unsupported.Load() }

// Apply applies one log entry and returns its *Result.
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies consecutive log entries in one memdb transaction, committed once:
// the radix nodes a batch touches are copied once, not once per entry. A refused command
// writes nothing (ops check everything before they write), so sharing the transaction is safe.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	b := newBatch(f, f.store.current())
	defer b.txn.Abort()
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			out[i] = f.applyOne(b, l.Index, l.Data)
		} else {
			out[i] = &Result{Index: l.Index}
		}
	}
	// Pruning once per batch leaves the state each entry's own pruning would have: it is
	// monotone, and nothing in a batch reads what it removes (lookups check the window).
	f.prune(b.audited, b.remembered)
	for table, index := range b.tables {
		must(b.txn.Insert(tIndex, &tableIndex{Table: table, Index: index}))
	}
	f.store.commit(b.txn, f.hist)
	f.setApplied(logs[len(logs)-1].Index)
	return out
}

// setApplied records that the store reflects index, and wakes WaitApplied.
func (f *FSM) setApplied(index uint64) {
	f.applied.Store(index)
	f.notifyMu.Lock()
	if f.notify != nil {
		close(f.notify)
		f.notify = nil
	}
	f.notifyMu.Unlock()
}

// WaitApplied blocks until the store reflects log index idx, or ctx ends.
func (f *FSM) WaitApplied(ctx context.Context, idx uint64) error {
	for {
		f.notifyMu.Lock()
		if f.notify == nil {
			f.notify = make(chan struct{})
		}
		ch := f.notify
		f.notifyMu.Unlock()
		if f.applied.Load() >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// AppliedIndex is the index of the last log entry the store reflects. (Raft's own
// AppliedIndex runs ahead: it counts entries handed to the FSM, not yet applied.)
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

func (f *FSM) applyOne(b *batch, index uint64, data []byte) *Result {
	if f.unsupported.Load() {
		// Past a command we could not apply, applying later ones would build a state that
		// differs from the other replicas'. Stand still until upgraded.
		return &Result{Index: index, Err: errorf(CodeUnsupported, "this replica stopped at a command it does not understand; upgrade it")}
	}
	c, err := decodeCommand(data)
	if err != nil {
		return f.refuse(index, "log entry %d is not a command this build can read", index)
	}
	o, ok := ops[c.Op]
	if !ok || c.V > o.version || c.V < 1 {
		return f.refuse(index, "command %s v%d is newer than this replica understands", c.Op, c.V)
	}
	if c.IdemKey != "" {
		if prev := f.seen(c.IdemKey, index); prev != nil {
			return prev
		}
	}
	t := &tx{Txn: b.txn, b: b, c: c, index: index}
	value, object, err := o.apply(t)
	res := &Result{Index: index}
	if errors.Is(err, errNewerPayload) {
		return f.refuse(index, "%v", err)
	}
	if err != nil {
		if t.wrote {
			panic(fmt.Sprintf("fsm: %s failed after writing: %v", c.Op, err))
		}
		res.Err = asError(err)
		return res
	}
	res.obj = value
	f.hist.audit = append(f.hist.audit, &AuditEvent{Seq: index, Time: c.Time, Actor: c.Actor, Action: c.Op, Object: object, Source: c.Source, Detail: t.detail})
	b.audited = index
	if c.IdemKey != "" {
		f.remember(c.IdemKey, index, res)
		b.remembered = index
	}
	return res
}

func (f *FSM) refuse(index uint64, format string, args ...any) *Result {
	f.unsupported.Store(true)
	err := errorf(CodeUnsupported, format, args...)
	f.logf("fsm: %v: this replica stands still until it is upgraded", err)
	return &Result{Index: index, Err: err}
}

func asError(err error) *Error {
	if e, ok := err.(*Error); ok {
		return e
	}
	return errorf(CodeInvalid, "%v", err)
}

// must panics on a memdb error: inserts into a static schema fail only on programming errors.
func must(err error) {
	if err != nil {
		panic(fmt.Sprintf("fsm: %v", err))
	}
}

var _ raft.BatchingFSM = (*FSM)(nil)

// Snapshot captures the state at this moment for Raft.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if f.unsupported.Load() {
		// A snapshot now would claim indexes this replica never applied; after the upgrade
		// it must replay them from the log.
		return nil, errors.New("fsm: no snapshot while stopped at an unsupported command")
	}
	// Called between batches: the store's history is the FSM's.
	txn, hist := f.store.view()
	return &snapshot{txn: txn, hist: hist, index: f.applied.Load()}, nil
}

// Restore replaces the state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	db, hist, index, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.hist, f.keys = hist, idemKeys(hist.idem)
	f.store.mu.Lock()
	f.store.swap(db, hist)
	f.store.mu.Unlock()
	f.setApplied(index)
	f.unsupported.Store(false)
	return nil
}
