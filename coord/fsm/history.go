package fsm

import (
	"cmp"
	"slices"
	"sort"
	"strings"
)

// history is the state that grows only at its end and is dropped only from its front, both
// in log order: the audit events and the idempotency entries. Every write adds one of each,
// so they live outside memdb: there each cost radix nodes copied and a watch channel per
// node, twice for the idempotency entry — a third of an apply and most of the state's
// memory — for lookups nobody makes (audit is read in order, idempotency keys by the FSM).
//
// Readers hold copies of the slices. The FSM appends past the end of every copy and drops
// by reslicing, never writing where a copy can see, so a copy stays what it was.
type history struct {
	audit []*AuditEvent // by Seq
	idem  []*idemEntry  // by Index
}

// auditSince returns up to limit (-1: all) events with Seq > seq, oldest first.
func (h history) auditSince(seq uint64, limit int) []*AuditEvent {
	i := sort.Search(len(h.audit), func(i int) bool { return h.audit[i].Seq > seq })
	out := h.audit[i:]
	if limit >= 0 && len(out) > limit {
		out = out[:limit]
	}
	return slices.Clone(out)
}

// newHistory orders the events and entries of a snapshot (older builds wrote them in
// memdb's key order).
func newHistory(audit []*AuditEvent, idem []*idemEntry) history {
	slices.SortStableFunc(audit, func(a, b *AuditEvent) int { return cmp.Compare(a.Seq, b.Seq) })
	slices.SortStableFunc(idem, func(a, b *idemEntry) int { return cmp.Compare(a.Index, b.Index) })
	return history{audit: audit, idem: idem}
}

// IdemKey makes a command's idempotency key of a scope (who sent which request with which
// client key: the API hashes them together, so two callers' keys never meet) and a digest of
// the request's body. A retry finds the answer remembered under the scope; the same scope
// with another body is refused with CodeKeyReused instead of answered with another
// request's result.
func IdemKey(scope, body string) string { return scope + "#" + body }

// splitIdem returns the scope and the body digest of an idempotency key ("": none, as keys
// made by the replica itself and by older builds have).
func splitIdem(key string) (scope, body string) {
	scope, body, _ = strings.Cut(key, "#")
	return scope, body
}

// CodeKeyReused refuses an idempotency key sent again with another request body.
const CodeKeyReused = "key_reused"

// idemKeys indexes the idempotency entries by scope, for the FSM alone.
func idemKeys(idem []*idemEntry) map[string]*idemEntry {
	keys := make(map[string]*idemEntry, len(idem))
	for _, e := range idem {
		scope, _ := splitIdem(e.Key)
		keys[scope] = e
	}
	return keys
}

// seen returns the result recorded for an idempotency key's scope within the window before
// index, or a refusal when it was recorded for another request body.
func (f *FSM) seen(key string, index uint64) *Result {
	scope, body := splitIdem(key)
	e := f.keys[scope]
	if e == nil || e.Index+idemWindow < index {
		return nil
	}
	if _, was := splitIdem(e.Key); was != body {
		return &Result{Index: index, Err: errorf(CodeKeyReused,
			"this Idempotency-Key was used (at log index %d) for a request with another body: send a new key for a new request", e.Index)}
	}
	return &e.Result
}

func (f *FSM) remember(key string, index uint64, res *Result) {
	e := &idemEntry{Key: key, Index: index, Result: *res}
	f.hist.idem = append(f.hist.idem, e)
	scope, _ := splitIdem(key)
	f.keys[scope] = e
}

// idemWindow is how many log entries an idempotency key is remembered for: a command at
// index i finds the entry made at j if j+idemWindow >= i.
const idemWindow = 100_000

// prune drops the audit events AuditKeep or more entries behind the newest one, at index
// audited, and the idempotency entries out of the window before the newest, at remembered,
// so the history stays bounded. (0: none written since the last pruning.)
func (f *FSM) prune(audited, remembered uint64) {
	keep := f.AuditKeep
	if keep == 0 {
		keep = 1_000_000
	}
	a := f.hist.audit
	for audited > 0 && len(a) > 0 && a[0].Seq+keep <= audited {
		a = a[1:]
	}
	f.hist.audit = a
	d := f.hist.idem
	for remembered > 0 && len(d) > 0 && d[0].Index+idemWindow <= remembered {
		if scope, _ := splitIdem(d[0].Key); f.keys[scope] == d[0] {
			delete(f.keys, scope)
		}
		d = d[1:]
	}
	f.hist.idem = d
}
