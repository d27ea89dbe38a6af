package fsm

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"
)

// harness applies commands as Raft would, with increasing indexes.
type harness struct {
	t     *testing.T
	f     *FSM
	index uint64
}

func newHarness(t *testing.T) *harness { return &harness{t: t, f: New(t.Logf)} }

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

func (h *harness) entry(op string, data any) *raft.Log {
	h.t.Helper()
	c, err := NewCommand(op, "tester", "127.0.0.1", data)
	if err != nil {
		h.t.Fatal(err)
	}
	c.Time = t0.Add(time.Duration(h.index) * time.Second)
	b, err := c.Encode()
	if err != nil {
		h.t.Fatal(err)
	}
	h.index++
	return &raft.Log{Index: h.index, Type: raft.LogCommand, Data: b}
}

func (h *harness) apply(op string, data any) *Result {
	h.t.Helper()
	return h.f.Apply(h.entry(op, data)).(*Result)
}

func (h *harness) ok(op string, data any) *Result {
	h.t.Helper()
	r := h.apply(op, data)
	if r.Err != nil {
		h.t.Fatalf("%s: %v", op, r.Err)
	}
	return r
}

// seed makes an admin, a member and a machine.
func (h *harness) seed() {
	h.ok("cluster.init", ClusterInit{ULA: "fd12:3456:789a::/48"})
	h.ok("user.create", User{ID: "u1", Name: "root", Role: RoleAdmin})
	h.ok("user.create", User{ID: "u2", Name: "alice", Role: RoleMember})
	h.ok("node.register", Node{ID: "n1", Name: "wm1", UserID: "u1", Tags: []string{WorkmachineTag}})
}

func snapshotBytes(t *testing.T, s *Store) []byte {
	var b bytes.Buffer
	if err := s.WriteSnapshot(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRefusals(t *testing.T) {
	tests := []struct {
		name string
		op   string
		data any
		want error
	}{
		{"duplicate user", "user.create", User{ID: "u9", Name: "alice", Role: RoleMember}, ErrConflict},
		{"bad user name", "user.create", User{ID: "u9", Name: "Alice_1", Role: RoleMember}, ErrInvalid},
		{"bad role", "user.create", User{ID: "u9", Name: "bob", Role: "root"}, ErrInvalid},
		{"delete missing user", "user.delete", ByName{"nobody"}, ErrNotFound},
		{"delete last admin", "user.delete", ByName{"root"}, ErrConflict},
		{"key for missing user", "apikey.create", APIKey{ID: "k9", UserID: "nope", Hash: "h"}, ErrNotFound},
		{"revoke missing key", "apikey.revoke", ByID{"k404"}, ErrNotFound},
		{"bad tag", "authkey.create", AuthKey{ID: "a9", UserID: "u1", Hash: "h", Tags: []string{"workmachine"}}, ErrInvalid},
		{"workspace on unknown machine", "workspace.create", Workspace{ID: "w9", Name: "api", OwnerID: "u2", Machine: "wm9", Image: "img"}, ErrNotFound},
		{"workspace named like a node", "workspace.create", Workspace{ID: "w9", Name: "wm1", OwnerID: "u2", Machine: "wm1", Image: "img"}, ErrConflict},
		{"workspace without image", "workspace.create", Workspace{ID: "w9", Name: "api", OwnerID: "u2", Machine: "wm1"}, ErrInvalid},
		{"workspace bad name", "workspace.create", Workspace{ID: "w9", Name: "-api", OwnerID: "u2", Machine: "wm1", Image: "img"}, ErrInvalid},
		{"duplicate workspace", "workspace.create", Workspace{ID: "w9", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"}, ErrConflict},
		{"stop missing workspace", "workspace.set", WorkspaceState{"nope", Stopped}, ErrNotFound},
		{"bad desired state", "workspace.set", WorkspaceState{"dev", "paused"}, ErrInvalid},
		{"delete node with workspaces", "node.delete", ByName{"wm1"}, ErrConflict},
		{"delete user with workspaces", "user.delete", ByName{"alice"}, ErrConflict},
		{"delete node with environments", "node.delete", ByName{"wm1"}, ErrConflict},
		{"restore garbage", "restore", Restore{Snapshot: base64.StdEncoding.EncodeToString([]byte("nope"))}, ErrInvalid},
		{"duplicate environment", "environment.create", Environment{ID: "e9", Name: "staging", OwnerID: "u2", Machine: "wm1", Services: []Service{{Name: "db"}}}, ErrConflict},
		{"environment on unknown machine", "environment.create", Environment{ID: "e9", Name: "qa", OwnerID: "u2", Machine: "nope", Services: []Service{{Name: "db"}}}, ErrNotFound},
		{"environment without services", "environment.create", Environment{ID: "e9", Name: "qa", OwnerID: "u2", Machine: "wm1"}, ErrInvalid},
		{"service with a bad name", "environment.create", Environment{ID: "e9", Name: "qa", OwnerID: "u2", Machine: "wm1", Services: []Service{{Name: "DB_1"}}}, ErrInvalid},
		{"intercept of unknown env", "intercept.create", Intercept{ID: "i9", Env: "prod", Service: "api", Port: 8080, Workspace: "dev", WorkspacePort: 3000}, ErrNotFound},
		{"intercept of unknown service", "intercept.create", Intercept{ID: "i9", Env: "staging", Service: "web", Port: 80, Workspace: "dev", WorkspacePort: 3000}, ErrNotFound},
		{"intercept to unknown workspace", "intercept.create", Intercept{ID: "i9", Env: "staging", Service: "api", Port: 8080, Workspace: "nope", WorkspacePort: 5432, Headers: []HeaderMatch{{"X-Dev", "a"}}}, ErrNotFound},
		{"intercept of a port not exposed", "intercept.create", Intercept{ID: "i9", Env: "staging", Service: "api", Port: 9090, Workspace: "dev", WorkspacePort: 3000}, ErrInvalid},
		{"intercept of a service without ports", "intercept.create", Intercept{ID: "i9", Env: "staging", Service: "postgres", Port: 5432, Workspace: "dev", WorkspacePort: 5432}, ErrInvalid},
		{"personal beside a global", "intercept.create", Intercept{ID: "i9", Env: "staging", Service: "api", Port: 8080, Workspace: "dev", WorkspacePort: 4000, Headers: []HeaderMatch{{"X-Dev", "a"}}}, ErrConflict},
		{"intercept header name not a token", "intercept.create", Intercept{ID: "i9", Env: "staging", Service: "api", Port: 8080, Workspace: "dev", WorkspacePort: 4000, Headers: []HeaderMatch{{"X Dev", "a"}}}, ErrInvalid},
		{"intercept header value not printable", "intercept.create", Intercept{ID: "i9", Env: "staging", Service: "api", Port: 8080, Workspace: "dev", WorkspacePort: 4000, Headers: []HeaderMatch{{"X-Dev", "a\nb"}}}, ErrInvalid},
		{"intercept with too many headers", "intercept.create", Intercept{ID: "i9", Env: "staging", Service: "api", Port: 8080, Workspace: "dev", WorkspacePort: 4000, Headers: slices.Repeat([]HeaderMatch{{"X-Dev", "a"}}, 9)}, ErrInvalid},
		{"intercept header twice", "intercept.create", Intercept{ID: "i9", Env: "staging", Service: "api", Port: 8080, Workspace: "dev", WorkspacePort: 4000, Headers: []HeaderMatch{{"X-Dev", "a"}, {"x-dev", "b"}}}, ErrInvalid},
		{"intercept name taken", "intercept.create", Intercept{ID: "i9", Name: "mine", Env: "staging", Service: "api", Port: 8081, Workspace: "dev", WorkspacePort: 4000}, ErrConflict},
		{"intercept name like an ID", "intercept.create", Intercept{ID: "i9", Name: "i1", Env: "staging", Service: "api", Port: 8081, Workspace: "dev", WorkspacePort: 4000}, ErrConflict},
		{"intercept bad name", "intercept.create", Intercept{ID: "i9", Name: "My_Intercept", Env: "staging", Service: "api", Port: 8081, Workspace: "dev", WorkspacePort: 4000}, ErrInvalid},
		{"intercept status from another machine", "intercept.status", InterceptStatus{Machine: "wm2", Intercepts: []InterceptObserved{{ID: "i1", State: "active"}}}, ErrForbidden},
		{"intercept status unknown state", "intercept.status", InterceptStatus{Machine: "wm1", Intercepts: []InterceptObserved{{ID: "i1", State: "dancing"}}}, ErrInvalid},
		{"remove an intercepted service", "environment.update", EnvironmentUpdate{Name: "staging", Services: []Service{{Name: "postgres", Image: "pg"}}}, ErrConflict},
		{"intercept with a bad port", "intercept.create", Intercept{ID: "i9", Env: "staging", Service: "postgres", Port: 70000, Workspace: "dev", WorkspacePort: 5432}, ErrInvalid},
		{"intercept taken", "intercept.create", Intercept{ID: "i9", Env: "staging", Service: "api", Port: 8080, Workspace: "dev", WorkspacePort: 4000}, ErrConflict},
		{"connect to unknown env", "workspace.connect", Connect{Workspace: "dev", Env: "prod"}, ErrNotFound},
		{"stop missing intercept", "intercept.delete", ByID{"i404"}, ErrNotFound},
		{"status from another machine", "workspace.status", WorkspaceStatus{Name: "dev", Machine: "wm2", State: "running"}, ErrConflict},
		{"status of missing workspace", "workspace.status", WorkspaceStatus{Name: "nope", Machine: "wm1", State: "running"}, ErrNotFound},
		{"unknown observed state", "workspace.status", WorkspaceStatus{Name: "dev", Machine: "wm1", State: "dancing"}, ErrInvalid},
		{"session reported by another machine", "ssh.start", Session{ID: "s1", Workspace: "dev", Machine: "wm2"}, ErrConflict},
		{"session into a missing workspace", "ssh.start", Session{ID: "s1", Workspace: "nope", Machine: "wm1"}, ErrNotFound},
		{"session without an ID", "ssh.end", SessionEnd{Session: Session{Workspace: "dev", Machine: "wm1"}}, ErrInvalid},
		{"session with an oversized ID", "ssh.start", Session{ID: strings.Repeat("s", 200), Workspace: "dev", Machine: "wm1"}, ErrInvalid},
		{"oversized recording", "ssh.end", SessionEnd{Session: Session{ID: "s1", Workspace: "dev", Machine: "wm1"}, Cast: make([]byte, MaxCast+1)}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.seed()
			h.ok("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"})
			h.ok("environment.create", Environment{ID: "e1", Name: "staging", OwnerID: "u2", Machine: "wm1",
				Services: []Service{{Name: "api", Image: "api", Ports: []int{8080, 8081}}, {Name: "postgres", Image: "pg"}}})
			h.ok("intercept.create", Intercept{ID: "i1", Env: "staging", Service: "api", Port: 8080, Workspace: "dev", WorkspacePort: 3000})
			h.ok("intercept.create", Intercept{ID: "i2", Name: "mine", Env: "staging", Service: "api", Port: 8081, Workspace: "dev", WorkspacePort: 3000, Headers: []HeaderMatch{{"X-Dev", "a"}}})
			before := snapshotBytes(t, h.f.Store())
			r := h.apply(tt.op, tt.data)
			if !errors.Is(r.Decode(nil), tt.want) {
				t.Fatalf("%s = %v; want %v", tt.op, r.Err, tt.want.(*Error).Code)
			}
			if r.Err.Msg == "" {
				t.Errorf("error has no message")
			}
			if diff := cmp.Diff(string(before), string(snapshotBytes(t, h.f.Store()))); diff != "" {
				t.Errorf("a refused command changed the state (-before +after):\n%s", diff)
			}
		})
	}
}

func TestLifecycleAndAudit(t *testing.T) {
	h := newHarness(t)
	h.seed()
	var w Workspace
	if err := h.ok("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"}).Decode(&w); err != nil {
		t.Fatal(err)
	}
	if w.Desired != Running || !w.CreatedAt.Equal(t0.Add(4*time.Second)) {
		t.Errorf("created %+v; want running, created at the command's time", w)
	}
	if w.State != "pending" {
		t.Errorf("a new workspace's state = %q, want pending", w.State)
	}
	if n := h.f.Store().Node("wm1"); n.ModifyIndex != h.index {
		t.Errorf("machine's modify index = %d after a workspace landed on it, want %d (peers must learn its new route)", n.ModifyIndex, h.index)
	}
	h.ok("workspace.status", WorkspaceStatus{Name: "dev", Machine: "wm1", State: "failed", Reason: "image not found"})
	if got := h.f.Store().Workspace("dev"); got.State != "failed" || got.Reason != "image not found" {
		t.Errorf("after a status report: state %q, reason %q", got.State, got.Reason)
	}
	h.ok("workspace.set", WorkspaceState{"dev", Stopped})
	if got := h.f.Store().Workspace("dev").Desired; got != Stopped {
		t.Errorf("desired = %s after stop", got)
	}
	if got := h.f.Store().TableIndex(tWorkspaces); got != h.index {
		t.Errorf("workspaces table index = %d, want %d", got, h.index)
	}
	h.ok("workspace.delete", ByName{"dev"})
	h.ok("user.delete", ByName{"alice"})
	var actions []string
	for _, e := range h.f.Store().Audit(0, 100) {
		actions = append(actions, e.Action+" "+e.Object)
	}
	want := []string{"cluster.init cluster", "user.create user/root", "user.create user/alice", "node.register node/wm1",
		"workspace.create workspace/dev", "workspace.status workspace/dev", "workspace.set workspace/dev", "workspace.delete workspace/dev", "user.delete user/alice"}
	if diff := cmp.Diff(want, actions); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
	if got := h.f.Store().Audit(5, 1); len(got) != 1 || got[0].Seq != 6 {
		t.Errorf("Audit(5, 1) = %v; want the event at 6", got)
	}
}

func TestEnvironmentLifecycle(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"})
	h.ok("environment.create", Environment{ID: "e1", Name: "staging", OwnerID: "u2", Machine: "wm1", Services: []Service{{Name: "api", Image: "api", Ports: []int{8080}}}})
	h.ok("workspace.connect", Connect{Workspace: "dev", Env: "staging"})
	var ic Intercept
	if err := h.ok("intercept.create", Intercept{ID: "i1", Env: "staging", Service: "api", Port: 8080, Workspace: "dev", WorkspacePort: 3000}).Decode(&ic); err != nil {
		t.Fatal(err)
	}
	if ic.Target != "staging/api:8080" {
		t.Errorf("target %q", ic.Target)
	}
	h.ok("environment.set", WorkspaceState{"staging", Stopped})
	h.ok("intercept.delete", ByID{"i1"})
	h.ok("environment.delete", ByName{"staging"})
	if w := h.f.Store().Workspace("dev"); w.Env != "" {
		t.Errorf("workspace still connected to a deleted environment: %q", w.Env)
	}
}

func TestIdempotency(t *testing.T) {
	h := newHarness(t)
	h.seed()
	send := func() *Result {
		l := h.entry("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"})
		c, _ := NewCommand("workspace.create", "tester", "", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"})
		c.IdemKey, c.Time = "retry-1", t0
		l.Data, _ = c.Encode()
		return h.f.Apply(l).(*Result)
	}
	first, second := send(), send()
	if first.Err != nil || second.Err != nil {
		t.Fatalf("create, retry = %v, %v; want the same success twice", first.Err, second.Err)
	}
	if diff := cmp.Diff(encodeAll(t, []any{first}), encodeAll(t, []any{second})); diff != "" {
		t.Errorf("retry answered differently:\n%s", diff)
	}
	if n := len(h.f.Store().Workspaces("")); n != 1 {
		t.Errorf("%d workspaces after a retried create", n)
	}
}

// TestUnsupported: a command from a newer version changes nothing, and the replica stands
// still (and takes no snapshot) rather than drift from the others.
func TestUnsupported(t *testing.T) {
	for _, op := range []struct {
		name string
		v    int
	}{{"volume.create", 1}, {"user.create", 2}, {"user.create+field", 1}} {
		h := newHarness(t)
		h.seed()
		before := snapshotBytes(t, h.f.Store())
		l := h.entry(op.name, User{ID: "u9", Name: "zed", Role: RoleMember})
		c, _ := NewCommand(op.name, "tester", "", User{ID: "u9", Name: "zed", Role: RoleMember})
		c.V = op.v
		if name, ok := strings.CutSuffix(op.name, "+field"); ok { // a field added by a newer build
			c, _ = NewCommand(name, "tester", "", map[string]any{"id": "u9", "name": "zed", "role": "member", "nickname": "z"})
		}
		l.Data, _ = c.Encode()
		if r := h.f.Apply(l).(*Result); !errors.Is(r.Decode(nil), ErrUnsupported) {
			t.Errorf("%s v%d = %v; want unsupported", op.name, op.v, r.Err)
		}
		if r := h.apply("user.create", User{ID: "u8", Name: "yan", Role: RoleMember}); !errors.Is(r.Decode(nil), ErrUnsupported) {
			t.Errorf("a command after the unsupported one applied: %v", r.Err)
		}
		if !h.f.Unsupported() {
			t.Errorf("Unsupported() = false")
		}
		if _, err := h.f.Snapshot(); err == nil {
			t.Errorf("snapshot taken while stopped")
		}
		if diff := cmp.Diff(string(before), string(snapshotBytes(t, h.f.Store()))); diff != "" {
			t.Errorf("state changed:\n%s", diff)
		}
	}
}

func TestSnapshotRestore(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok("apikey.create", APIKey{ID: "k1", UserID: "u1", Hash: "abc"})
	h.ok("authkey.create", AuthKey{ID: "a1", UserID: "u1", Hash: "def", Reusable: true, Tags: []string{"tag:wm"}})
	h.ok("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img", CPU: 1.5})
	h.ok("policy.set", Policy{Text: `{"acls": []}`})
	want := snapshotBytes(t, h.f.Store())

	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := New(t.Logf)
	if err := g.Restore(sink.closer()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(snapshotBytes(t, g.Store()))); diff != "" {
		t.Errorf("restored state differs:\n%s", diff)
	}
	if g.Store().Policy().Version != 1 || g.Store().Workspace("dev").CPU != 1.5 {
		t.Errorf("restored reads wrong: %+v", g.Store().Policy())
	}

	// The restore command replaces a live state with a backup's.
	h2 := newHarness(t)
	h2.ok("user.create", User{ID: "x", Name: "other", Role: RoleAdmin})
	h2.ok("restore", Restore{Snapshot: base64.StdEncoding.EncodeToString(want)})
	if h2.f.Store().UserByName("other") != nil || h2.f.Store().Workspace("dev") == nil {
		t.Errorf("restore did not replace the state")
	}
	// ... but the cluster's audit log stays its own: its events, then the restore.
	var actions []string
	for _, e := range h2.f.Store().Audit(0, -1) {
		actions = append(actions, fmt.Sprint(e.Seq, " ", e.Action))
	}
	if diff := cmp.Diff([]string{"1 user.create", "2 restore"}, actions); diff != "" {
		t.Errorf("audit after a restore (-want +got):\n%s", diff)
	}
}

// TestHistoryOfOlderSnapshots: builds before the history left memdb wrote idempotency
// entries in memdb's key order, not in log order; read back, a snapshot's history is in log
// order whatever order it was written in, and a retry of a key the snapshot remembers gets
// the remembered answer.
func TestHistoryOfOlderSnapshots(t *testing.T) {
	h := newHarness(t)
	h.seed()
	snap := string(snapshotBytes(t, h.f.Store()))
	snap += `{"t":"audit","o":{"seq":200,"time":"2026-11-24T10:00:00Z","actor":"a","action":"late","object":"x"}}
{"t":"audit","o":{"seq":130,"time":"2026-11-24T10:00:00Z","actor":"a","action":"early","object":"x"}}
{"t":"idempotency","o":{"key":"b","index":3,"result":{"index":3,"value":{"id":"u2"}}}}
{"t":"idempotency","o":{"key":"a","index":4,"result":{"index":4,"value":{"id":"n1"}}}}
`
	g := New(t.Logf)
	if err := g.Restore(io.NopCloser(strings.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range g.Store().Audit(0, -1) {
		seqs = append(seqs, e.Seq)
	}
	if !slices.Equal(seqs, []uint64{1, 2, 3, 4, 130, 200}) {
		t.Errorf("audit read back as %v; want Seq order", seqs)
	}
	if got := g.Store().Audit(4, 1); len(got) != 1 || got[0].Action != "early" {
		t.Errorf("Audit(4, 1) = %+v; want the event at 130", got)
	}
	c, _ := NewCommand("user.create", "tester", "", User{ID: "u9", Name: "zed", Role: RoleMember})
	c.IdemKey = "b"
	res := g.Apply(&raft.Log{Index: 201, Type: raft.LogCommand, Data: must2(c.Encode())}).(*Result)
	if string(must2(json.Marshal(res))) != `{"index":3,"value":{"id":"u2"}}` || g.Store().UserByName("zed") != nil {
		t.Errorf("retry of a remembered key: %s, zed created: %v; want the remembered answer", must2(json.Marshal(res)), g.Store().UserByName("zed") != nil)
	}
}

// TestHistoryReadersDuringWrites: readers' views of the audit log and snapshots stay what
// they were while the FSM appends and prunes (run with -race: the FSM must never write
// where a view can see).
func TestHistoryReadersDuringWrites(t *testing.T) {
	h := newHarness(t)
	h.f.AuditKeep = 50
	h.seed()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			events := h.f.Store().Audit(0, -1)
			for i := 1; i < len(events); i++ {
				if events[i].Seq != events[i-1].Seq+1 {
					t.Errorf("audit view not contiguous: %d after %d", events[i].Seq, events[i-1].Seq)
					return
				}
			}
			var b bytes.Buffer
			if err := h.f.Store().WriteSnapshot(&b); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range 3000 {
		var logs []*raft.Log
		for j := range 1 + i%7 {
			c, _ := NewCommand("user.create", "tester", "", User{ID: fmt.Sprint("x", i, "-", j), Name: fmt.Sprint("x", i, "-", j), Role: RoleMember})
			c.IdemKey = fmt.Sprint("k", i, "-", j)
			h.index++
			logs = append(logs, &raft.Log{Index: h.index, Type: raft.LogCommand, Data: must2(c.Encode())})
		}
		h.f.ApplyBatch(logs)
	}
	close(done)
	wg.Wait()
	if got := h.f.Store().Audit(0, -1); len(got) != 50 || got[49].Seq != h.index {
		t.Errorf("%d events kept, last %d; want 50, the last at %d", len(got), got[len(got)-1].Seq, h.index)
	}
}

// TestApplyBatchEqualsApply: however Raft cuts the log into batches, every replica ends with
// the same state and the same answers. Within a batch, ops read what earlier commands of the
// batch wrote from the batch's own map (batch.go): this workload leans on that — duplicates
// within a batch, a delete then a re-create, a node key rotated and then taken by another
// node, retries of an idempotency key, pruned audit and recordings, a restore midway.
func TestApplyBatchEqualsApply(t *testing.T) {
	type cmd struct {
		op   string
		data any
		idem string
	}
	s := Session{ID: "s", Workspace: "dev", Machine: "wm1", User: "alice"}
	var cmds []cmd
	add := func(op string, data any) { cmds = append(cmds, cmd{op: op, data: data}) }
	add("cluster.init", ClusterInit{ULA: "fd12:3456:789a::/48"})
	add("user.create", User{ID: "u1", Name: "root", Role: RoleAdmin})
	add("user.create", User{ID: "u2", Name: "alice", Role: RoleMember})
	add("user.create", User{ID: "u3", Name: "alice", Role: RoleMember}) // name taken
	add("user.create", User{ID: "u2", Name: "bob", Role: RoleMember})   // ID taken
	add("node.register", Node{ID: "n1", Name: "wm1", UserID: "u1", Tags: []string{WorkmachineTag}})
	add("authkey.create", AuthKey{ID: "many", UserID: "u2", Hash: "h", Reusable: true})
	add("node.join", Join{ID: "na", Hostname: "a", MachineKey: "mkey:a", NodeKey: "nodekey:1", AuthKeyID: "many"})
	add("node.join", Join{ID: "nb", Hostname: "b", MachineKey: "mkey:b", NodeKey: "nodekey:1", AuthKeyID: "many"})  // key in use
	add("node.join", Join{ID: "na2", Hostname: "a", MachineKey: "mkey:a", NodeKey: "nodekey:2", AuthKeyID: "many"}) // a rotates
	add("node.join", Join{ID: "nb", Hostname: "b", MachineKey: "mkey:b", NodeKey: "nodekey:1", AuthKeyID: "many"})  // now free
	early := len(cmds)                                                                                              // the state before the workspaces and keys, restored below
	for i := range 3 {
		add("workspace.create", Workspace{ID: fmt.Sprint("w", i), Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"})
		add("workspace.set", WorkspaceState{"dev", Stopped})
		add("workspace.delete", ByName{"dev"})
		add("workspace.delete", ByName{"dev"}) // gone already
	}
	add("workspace.create", Workspace{ID: "w9", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"})
	retry := func(i int) {
		cmds = append(cmds, cmd{op: "apikey.create", data: APIKey{ID: fmt.Sprint("k", i), UserID: "u2", Hash: "h"}, idem: fmt.Sprint("retry-", i)})
	}
	retry(0)
	retry(1)
	retry(0) // a retry: the first answer again, no second key
	add("restore-early", nil)
	retry(1)                                                                                                // the key is new again
	add("workspace.create", Workspace{ID: "w10", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"}) // and the name free
	for i := range MaxRecordings + 3 {
		s.ID = fmt.Sprint("s", i%(MaxRecordings+1)) // the first ID comes back once it was pruned
		add("ssh.end", SessionEnd{Session: s, Cast: []byte("gz")})
	}
	retry(1) // after the restore, which brought the key back
	add("apikey.revoke", ByID{"k0"})
	add("user.delete", ByName{"alice"}) // owns a workspace
	add("workspace.delete", ByName{"dev"})
	add("user.delete", ByName{"alice"})
	add("user.create", User{ID: "u4", Name: "alice", Role: RoleMember})

	// The log, its entries made once so every run applies the same bytes.
	var logs []*raft.Log
	restore := func(upTo int) *raft.Log { // a restore of the state one-by-one had after logs[:upTo]
		h := newHarness(t)
		h.f.AuditKeep = 40
		for _, l := range logs[:upTo] {
			h.f.Apply(l)
		}
		backup := snapshotBytes(t, h.f.Store())
		return entry(t, len(logs)+1, "restore", Restore{Snapshot: base64.StdEncoding.EncodeToString(backup)}, "")
	}
	for i, c := range cmds {
		if i == len(cmds)/2 { // a restore midway, of the state there
			logs = append(logs, restore(len(logs)))
		}
		if c.op == "restore-early" { // a restore of an older state, right after writes it undoes
			logs = append(logs, restore(early))
			continue
		}
		logs = append(logs, entry(t, len(logs)+1, c.op, c.data, c.idem))
	}

	apply := func(cut func() int) ([]any, string) {
		f := New(t.Logf)
		f.AuditKeep = 40
		var results []any
		for rest := logs; len(rest) > 0; {
			n := min(cut(), len(rest))
			results = append(results, f.ApplyBatch(rest[:n])...)
			rest = rest[n:]
		}
		return results, string(snapshotBytes(t, f.Store()))
	}
	wantRes, want := apply(func() int { return 1 })
	for _, r := range wantRes[3:5] {
		if r.(*Result).Err == nil {
			t.Fatalf("a taken name or ID was accepted: the workload does not test what it says")
		}
	}
	for seed := range 6 {
		rnd := rand.New(rand.NewPCG(uint64(seed), 0))
		gotRes, got := apply(func() int { return 1 + rnd.IntN(40) })
		if diff := cmp.Diff(encodeAll(t, wantRes), encodeAll(t, gotRes)); diff != "" {
			t.Fatalf("seed %d: batched answers differ from one-by-one (-want +got):\n%s", seed, diff)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("seed %d: batched state differs from one-by-one (-want +got):\n%s", seed, diff)
		}
	}
	if _, all := apply(func() int { return len(logs) }); all != want {
		t.Errorf("the log as one batch differs from one-by-one")
	}
}

// encodeAll is results as the answering replica sends them.
func encodeAll(t *testing.T, results []any) []string {
	var out []string
	for _, r := range results {
		out = append(out, string(must2(json.Marshal(r))))
	}
	return out
}

// entry is log entry index holding a command, at a time derived from its index.
func entry(t *testing.T, index int, op string, data any, idem string) *raft.Log {
	c, err := NewCommand(op, "tester", "127.0.0.1", data)
	if err != nil {
		t.Fatal(err)
	}
	c.Time, c.IdemKey = t0.Add(time.Duration(index)*time.Second), idem
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: uint64(index), Type: raft.LogCommand, Data: b}
}

func FuzzApply(f *testing.F) {
	f.Add([]byte(`J{"op":"user.create","v":1,"data":{"id":"a","name":"b","role":"admin"}}`))
	f.Add([]byte(`J{"op":"restore","v":1,"data":{"snapshot":"e30K"}}`))
	c, _ := NewCommand("user.create", "admin", "127.0.0.1", User{ID: "a", Name: "b", Role: RoleAdmin})
	c.IdemKey = "k"
	f.Add(must2(c.Encode())) // the binary format
	// A backup whose user has no ID: the schema refuses it, and so must the command.
	bad := base64.StdEncoding.EncodeToString([]byte("{\"format\":\"meshwork-state\",\"version\":1}\n{\"t\":\"users\",\"o\":{}}\n"))
	f.Add([]byte(`J{"op":"restore","v":1,"data":{"snapshot":"` + bad + `"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := New(nil)
		fsm.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
	})
}

func BenchmarkApply(b *testing.B) {
	h := &harness{t: &testing.T{}, f: New(nil)}
	h.ok("user.create", User{ID: "u1", Name: "root", Role: RoleAdmin})
	for i := 0; b.Loop(); i++ {
		k := APIKey{ID: fmt.Sprintf("k%d", i), UserID: "u1", Hash: "h"}
		h.f.Apply(h.entry("apikey.create", k))
	}
}

type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }
func (s *memSink) closer() *readCloser {
	return &readCloser{bytes.NewReader(s.Bytes())}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func TestWaitIndex(t *testing.T) {
	h := newHarness(t)
	h.seed()
	s := h.f.Store()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	before := s.TableIndex(TableWorkspaces)
	got := make(chan uint64)
	go func() { got <- s.WaitIndex(ctx, before, TableWorkspaces) }()
	h.ok("user.create", User{ID: "u3", Name: "carol", Role: RoleMember}) // another table: no wake-up
	select {
	case idx := <-got:
		t.Fatalf("woke at %d on a change to another table", idx)
	case <-time.After(50 * time.Millisecond):
	}
	h.ok("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"})
	if idx := <-got; idx != h.index {
		t.Errorf("woke at %d, want %d", idx, h.index)
	}

	// A restore wakes waiters too.
	snap := snapshotBytes(t, s)
	now := h.index
	go func() { got <- s.WaitIndex(ctx, now, TableWorkspaces) }()
	time.Sleep(20 * time.Millisecond)
	h.ok("restore", Restore{Snapshot: base64.StdEncoding.EncodeToString(snap)})
	select {
	case <-got:
	case <-time.After(2 * time.Second):
		t.Errorf("restore did not wake the waiter")
	}
}

// TestAddresses: every node and workspace gets its own mesh address pair, in the cluster's
// ranges; deleting one frees its address; the cluster's prefix is set once.
func TestAddresses(t *testing.T) {
	h := newHarness(t)
	h.seed()
	seen := map[string]bool{h.f.Store().Node("wm1").IPv4: true}
	for i := range 50 {
		var w Workspace
		if err := h.ok("workspace.create", Workspace{ID: fmt.Sprint("w", i), Name: fmt.Sprint("ws", i), OwnerID: "u2", Machine: "wm1", Image: "img"}).Decode(&w); err != nil {
			t.Fatal(err)
		}
		if seen[w.IPv4] || !strings.HasPrefix(w.IPv6, "fd12:3456:789a::") || !strings.HasPrefix(w.IPv4, "100.64.") {
			t.Fatalf("workspace %d got %s / %s (seen before: %v)", i, w.IPv4, w.IPv6, seen[w.IPv4])
		}
		seen[w.IPv4] = true
	}
	addr := h.f.Store().Workspace("ws7").IPv4
	h.ok("workspace.delete", ByName{"ws7"})
	if l := first[addrLease](h.f.Store().read(), tAddrs, "id", addr); l != nil {
		t.Errorf("address %s still leased to %s after delete", addr, l.Owner)
	}
	h.ok("cluster.init", ClusterInit{ULA: "fdff::/48"})
	if got := h.f.Store().ULA().String(); got != "fd12:3456:789a::/48" {
		t.Errorf("a second cluster.init changed the prefix to %s", got)
	}
}

func TestJoin(t *testing.T) {
	h := newHarness(t)
	h.seed()
	exp := t0.Add(time.Hour)
	h.ok("policy.set", Policy{Text: `{"tagOwners": {"tag:laptop": ["alice"]}}`})
	h.ok("authkey.create", AuthKey{ID: "once", UserID: "u2", Hash: "h", ExpiresAt: &exp})
	h.ok("authkey.create", AuthKey{ID: "many", UserID: "u2", Hash: "h", Reusable: true, Tags: []string{"tag:laptop"}, ExpiresAt: &exp})
	h.ok("authkey.create", AuthKey{ID: "gone", UserID: "u2", Hash: "h", Reusable: true})
	h.ok("authkey.revoke", ByID{"gone"})

	var a Node
	if err := h.ok("node.join", Join{ID: "na", Hostname: "Alice's MacBook.local", MachineKey: "mkey:a", NodeKey: "nodekey:a1", AuthKeyID: "once"}).Decode(&a); err != nil {
		t.Fatal(err)
	}
	if a.Name != "alice-s-macbook" || a.UserID != "u2" || a.IPv4 == "" {
		t.Errorf("joined %+v", a)
	}
	for _, tt := range []struct {
		name string
		j    Join
		says string
	}{
		{"single-use key again", Join{ID: "nb", Hostname: "b", MachineKey: "mkey:b", NodeKey: "nodekey:b", AuthKeyID: "once"}, "single-use"},
		{"revoked key", Join{ID: "nb", Hostname: "b", MachineKey: "mkey:b", NodeKey: "nodekey:b", AuthKeyID: "gone"}, "revoked"},
		{"no key", Join{ID: "nb", Hostname: "b", MachineKey: "mkey:b", NodeKey: "nodekey:b"}, "auth key is required"},
		{"someone's node key", Join{ID: "nb", Hostname: "b", MachineKey: "mkey:b", NodeKey: "nodekey:a1", AuthKeyID: "many"}, "already used"},
	} {
		if r := h.apply("node.join", tt.j); r.Err == nil || !strings.Contains(r.Err.Msg, tt.says) {
			t.Errorf("%s: %v; want an error about %q", tt.name, r.Err, tt.says)
		}
	}
	// A name clash gets a suffix; the tags come from the key.
	var b Node
	h.ok("node.join", Join{ID: "nb", Hostname: "alice-s-macbook", MachineKey: "mkey:b", NodeKey: "nodekey:b", AuthKeyID: "many"}).Decode(&b)
	if b.Name != "alice-s-macbook-2" || len(b.Tags) != 1 {
		t.Errorf("clash: %+v", b)
	}
	// The same machine again rotates its node key and keeps name and addresses.
	var again Node
	h.ok("node.join", Join{Hostname: "other", MachineKey: "mkey:a", NodeKey: "nodekey:a2"}).Decode(&again)
	if again.ID != a.ID || again.Name != a.Name || again.IPv4 != a.IPv4 || again.NodeKey != "nodekey:a2" {
		t.Errorf("rejoin: %+v, was %+v", again, a)
	}
	// After expiry the reusable key stops working.
	h.index = 4000 // command time = t0 + 4000 s, past the hour
	if r := h.apply("node.join", Join{ID: "nc", Hostname: "c", MachineKey: "mkey:c", NodeKey: "nodekey:c", AuthKeyID: "many"}); r.Err == nil || !strings.Contains(r.Err.Msg, "expired") {
		t.Errorf("expired key: %v", r.Err)
	}
}

// TestTagOwners: a member gives machines only the tags the policy's tagOwners gives her, at
// the key's making and again at the join; only workmachines host workspaces.
func TestTagOwners(t *testing.T) {
	h := newHarness(t)
	h.seed()
	exp := t0.Add(time.Hour)
	key := func(id, user string, tags ...string) AuthKey {
		return AuthKey{ID: id, UserID: user, Hash: "h", Reusable: true, Tags: tags, ExpiresAt: &exp}
	}
	// No policy: only admins use tags.
	if r := h.apply("authkey.create", key("k1", "u2", "tag:prod")); !errors.Is(r.Decode(nil), ErrForbidden) {
		t.Errorf("member's tagged key without a policy: %v; want forbidden", r.Err)
	}
	h.ok("authkey.create", key("k2", "u1", "tag:prod"))
	// The policy gives alice tag:ci, not tag:prod.
	h.ok("policy.set", Policy{Text: `{"groups": {"group:ci": ["alice"]}, "tagOwners": {"tag:ci": ["group:ci"], "tag:prod": []}}`})
	if r := h.apply("authkey.create", key("k3", "u2", "tag:ci", "tag:prod")); !errors.Is(r.Decode(nil), ErrForbidden) {
		t.Errorf("member's key with a tag she does not own: %v; want forbidden", r.Err)
	}
	h.ok("authkey.create", key("k4", "u2", "tag:ci"))
	// She loses tag:ci: her key no longer joins a machine with it.
	h.ok("policy.set", Policy{Text: `{"tagOwners": {"tag:ci": []}}`})
	if r := h.apply("node.join", Join{ID: "nx", Hostname: "x", MachineKey: "mkey:x", NodeKey: "nodekey:x", AuthKeyID: "k4"}); !errors.Is(r.Decode(nil), ErrForbidden) {
		t.Errorf("join with a tag its key's user no longer owns: %v; want forbidden", r.Err)
	}
	// Tagging machines: a member neither tags nor untags a machine with a tag she does not own.
	h.ok("node.register", Node{ID: "n2", Name: "laptop", UserID: "u2"})
	if r := h.apply("node.tag", NodeTags{Name: "laptop", UserID: "u2", Tags: []string{WorkmachineTag}}); !errors.Is(r.Decode(nil), ErrForbidden) {
		t.Errorf("member tags her laptop a workmachine: %v; want forbidden", r.Err)
	}
	if r := h.apply("node.tag", NodeTags{Name: "wm1", UserID: "u2"}); !errors.Is(r.Decode(nil), ErrForbidden) {
		t.Errorf("member untags a workmachine: %v; want forbidden", r.Err)
	}
	// Only workmachines host workspaces and environments.
	if r := h.apply("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "laptop", Image: "img"}); !errors.Is(r.Decode(nil), ErrInvalid) {
		t.Errorf("workspace on a laptop: %v; want invalid", r.Err)
	}
	if r := h.apply("environment.create", Environment{ID: "e1", Name: "qa", OwnerID: "u2", Machine: "laptop", Services: []Service{{Name: "db"}}}); !errors.Is(r.Decode(nil), ErrInvalid) {
		t.Errorf("environment on a laptop: %v; want invalid", r.Err)
	}
	// An admin makes the laptop a workmachine; it then hosts workspaces and cannot lose the tag
	// while it does.
	h.ok("node.tag", NodeTags{Name: "laptop", UserID: "u1", Tags: []string{WorkmachineTag, WorkmachineTag}})
	h.ok("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "laptop", Image: "img"})
	if r := h.apply("node.tag", NodeTags{Name: "laptop", UserID: "u1"}); !errors.Is(r.Decode(nil), ErrConflict) {
		t.Errorf("untag a machine that hosts a workspace: %v; want conflict", r.Err)
	}
}

// TestAuditKept: the audit log keeps the last AuditKeep log entries' events.
func TestAuditKept(t *testing.T) {
	h := newHarness(t)
	h.f.AuditKeep = 5
	h.seed()
	for i := range 10 {
		h.ok("user.create", User{ID: fmt.Sprint("x", i), Name: fmt.Sprint("x", i), Role: RoleMember})
	}
	got := h.f.Store().Audit(0, 100)
	if len(got) != 5 || got[0].Seq != h.index-4 || got[4].Seq != h.index {
		t.Errorf("audit after %d writes with AuditKeep 5: %d events from %d; want the last 5", h.index, len(got), got[0].Seq)
	}
}

func TestSessionsAndRecordings(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"})
	var laptop Node
	h.ok("node.register", Node{ID: "n2", Name: "laptop", UserID: "u2"}).Decode(&laptop)
	// The machine says root called; coord's records say the address is alice's laptop.
	s := Session{ID: "s1", Workspace: "dev", Machine: "wm1", User: "root", Node: "wm1", From: laptop.IPv4 + ":4242", Login: "alice"}
	h.ok("ssh.start", s)
	h.ok("ssh.end", SessionEnd{Session: s, Cast: []byte("gz"), CastSize: 100})
	h.ok("ssh.end", SessionEnd{Session: Session{ID: "s2", Workspace: "dev", Machine: "wm1", User: "alice"}}) // no PTY: nothing kept
	recs := h.f.Store().Recordings("w1")
	if len(recs) != 1 || recs[0].ID != "s1" || string(recs[0].Cast) != "gz" {
		t.Fatalf("recordings = %+v, want s1's", recs)
	}
	if r := recs[0]; r.User != "alice" || r.UserID != "u2" || r.Node != "laptop" || r.OwnerID != "u2" || r.WorkspaceID != "w1" {
		t.Errorf("recorded session %+v; want alice's, from laptop, into w1 of u2", r.Session)
	}
	events := h.f.Store().Audit(0, 100)
	last := events[len(events)-2]
	if last.Action != "ssh.end" || !strings.Contains(last.Detail, "session s1: alice from laptop") {
		t.Errorf("audit of the session's end = %+v", last)
	}
	// By its mesh IPv6 too; an address that is no machine names no one.
	h.ok("ssh.start", Session{ID: "s3", Workspace: "dev", Machine: "wm1", User: "root", From: "[" + laptop.IPv6 + "]:22"})
	h.ok("ssh.start", Session{ID: "s4", Workspace: "dev", Machine: "wm1", User: "root", From: "100.127.1.1:22"})
	events = h.f.Store().Audit(0, 100)
	if d := events[len(events)-2].Detail; !strings.Contains(d, "alice from laptop") {
		t.Errorf("session from the laptop's IPv6 audited as %q", d)
	}
	if d := events[len(events)-1].Detail; strings.Contains(d, "root") || !strings.Contains(d, "no machine") {
		t.Errorf("session from an unknown address audited as %q", d)
	}

	// What a machine reports is cut to size, and still audited.
	h.ok("ssh.end", SessionEnd{Session: Session{ID: "long", Workspace: "dev", Machine: "wm1", Command: strings.Repeat("x", 10*MaxCommand), Login: strings.Repeat("l", 1000)}, Cast: []byte("gz")})
	if r := h.f.Store().Recording("long"); r == nil || len(r.Command) != MaxCommand || len(r.Login) != MaxHostname {
		t.Errorf("a session's long command and login kept whole: %v", r != nil)
	}

	// Caps are per workspace: a flood into one pushes out only its own.
	h.ok("workspace.create", Workspace{ID: "w2", Name: "other", OwnerID: "u1", Machine: "wm1", Image: "img"})
	h.ok("ssh.end", SessionEnd{Session: Session{ID: "o1", Workspace: "other", Machine: "wm1"}, Cast: []byte("gz")})
	for i := range MaxRecordings + 5 {
		h.ok("ssh.end", SessionEnd{Session: Session{ID: fmt.Sprintf("x%d", i), Workspace: "dev", Machine: "wm1"}, Cast: []byte("gz")})
	}
	if recs := h.f.Store().Recordings("w1"); len(recs) != MaxRecordings || recs[0].ID != "x5" {
		t.Errorf("after %d more: %d recordings, oldest %s; want %d, oldest x5", MaxRecordings+5, len(recs), recs[0].ID, MaxRecordings)
	}
	if recs := h.f.Store().Recordings("w2"); len(recs) != 1 {
		t.Errorf("another workspace's recordings: %d, want its 1 kept", len(recs))
	}
	big := make([]byte, MaxCast)
	for i := range MaxRecordingBytes/MaxCast + 2 {
		h.ok("ssh.end", SessionEnd{Session: Session{ID: fmt.Sprintf("b%d", i), Workspace: "dev", Machine: "wm1"}, Cast: big})
	}
	var size int64
	for _, r := range h.f.Store().Recordings("w1") {
		size += int64(len(r.Cast))
	}
	if size > MaxRecordingBytes {
		t.Errorf("workspace w1 keeps %d bytes of recordings, over %d", size, MaxRecordingBytes)
	}

	// Deleting the workspace deletes its recordings: a new one of the same name starts bare.
	h.ok("workspace.delete", ByName{"dev"})
	h.ok("workspace.create", Workspace{ID: "w3", Name: "dev", OwnerID: "u1", Machine: "wm1", Image: "img"})
	for _, r := range h.f.Store().Recordings("") {
		if r.WorkspaceID == "w1" {
			t.Fatalf("recording %s of deleted workspace w1 kept", r.ID)
		}
	}
	if recs := h.f.Store().Recordings("w3"); len(recs) != 0 {
		t.Errorf("new workspace dev sees %d recordings", len(recs))
	}
}

// BenchmarkApplyUsers is the admin-write benchmark's load as one replica's FSM sees it: user
// creations with server-made idempotency keys, applied in batches of 16 (what Raft hands
// over at 32 clients), onto a store that already holds 20,000 users.
func BenchmarkApplyUsers(b *testing.B) {
	h := &harness{t: &testing.T{}, f: New(nil)}
	user := func(i int) *raft.Log {
		c, _ := NewCommand("user.create", "admin", "127.0.0.1", User{ID: fmt.Sprintf("%024x", i*7919), Name: fmt.Sprintf("bench-%d", i), Role: RoleMember})
		c.IdemKey = fmt.Sprintf("%024x", i*104729)
		data, _ := c.Encode()
		h.index++
		return &raft.Log{Index: h.index, Type: raft.LogCommand, Data: data}
	}
	const batch = 16
	next := 0
	applyBatch := func() {
		logs := make([]*raft.Log, batch)
		for j := range logs {
			logs[j] = user(next)
			next++
		}
		for _, r := range h.f.ApplyBatch(logs) {
			if r.(*Result).Err != nil {
				b.Fatal(r.(*Result).Err)
			}
		}
	}
	for range 20_000 / batch {
		applyBatch()
	}
	b.ResetTimer()
	for b.Loop() {
		applyBatch()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/write")
}

// TestCommandFormats: what Encode writes decodes to the same command; an entry in the JSON
// format of earlier builds applies as before; a cut entry is refused, never half-applied.
func TestCommandFormats(t *testing.T) {
	for _, c := range []Command{
		{Op: "user.create", V: 1, Actor: "admin", Source: "127.0.0.1", Time: t0.Add(123456789), IdemKey: "k", Data: json.RawMessage(`{"id":"u9","name":"zed","role":"member"}`)},
		{Op: "policy.set", V: 2, Actor: "ünïcode", Data: json.RawMessage(`{}`)}, // zero time, no source, no key
	} {
		got, err := decodeCommand(must2(c.Encode()))
		if err != nil {
			t.Fatalf("%s: %v", c.Op, err)
		}
		if diff := cmp.Diff(&c, got); diff != "" {
			t.Errorf("%s: decoded differs (-sent +got):\n%s", c.Op, diff)
		}
	}

	// The same command in both formats: the same answer and the same state.
	c, _ := NewCommand("user.create", "admin", "127.0.0.1", User{ID: "u9", Name: "zed", Role: RoleMember})
	c.Time = t0
	old, _ := json.Marshal(c)
	var states, answers []string
	for _, data := range [][]byte{append([]byte{formatJSON}, old...), must2(c.Encode())} {
		f := New(t.Logf)
		r := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data}).(*Result)
		if r.Err != nil {
			t.Fatalf("format %c: %v", data[0], r.Err)
		}
		states, answers = append(states, string(snapshotBytes(t, f.Store()))), append(answers, string(must2(json.Marshal(r))))
	}
	if !strings.Contains(answers[0], `"name":"zed"`) || states[0] != states[1] || answers[0] != answers[1] {
		t.Errorf("JSON and binary entries differ:\n%s\n%s", states[0], states[1])
	}

	// Cut anywhere, the entry is refused: as not a command, or as a malformed payload.
	entry := must2(c.Encode())
	for n := range len(entry) - 1 {
		f := New(nil)
		if r := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: entry[:n]}).(*Result); r.Err == nil {
			t.Fatalf("entry cut to %d bytes applied", n)
		}
		if u := f.Store().UserByName("zed"); u != nil {
			t.Fatalf("entry cut to %d bytes made a user", n)
		}
	}
}

func must2[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestUserDeleteTakesMachines: a deleted user's machines leave the mesh with her (peers are
// told: the nodes are gone), but for tagged ones, which belong to their tags.
func TestUserDeleteTakesMachines(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok("node.register", Node{ID: "n2", Name: "laptop", UserID: "u2"})
	h.ok("node.register", Node{ID: "n3", Name: "ci", UserID: "u2", Tags: []string{"tag:ci"}})
	before := h.index
	h.ok("user.delete", ByName{"alice"})
	st := h.f.Store()
	if st.Node("laptop") != nil {
		t.Errorf("alice's laptop is still on the mesh after she was deleted")
	}
	if gone := st.NodesGoneSince(before); len(gone) != 1 || gone[0] != "n2" {
		t.Errorf("nodes gone = %v; want her laptop, so peers drop it", gone)
	}
	if st.Node("ci") == nil {
		t.Errorf("a tagged machine went with the user who joined it")
	}
	// Its address is free again.
	var n Node
	h.ok("node.register", Node{ID: "n4", Name: "next", UserID: "u1"}).Decode(&n)
	if n.IPv4 == "" {
		t.Errorf("no address for the next machine")
	}
}

// TestOnline: a node is online while a replica says it streams there; a close from a
// replica it has left changes nothing; a replica's new boot ends its old boot's streams.
func TestOnline(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok("node.register", Node{ID: "n2", Name: "laptop", UserID: "u2"})
	online := func(name string) bool { return h.f.Store().Node(name).Online }
	h.ok("node.online", Online{ID: "n2", Stream: "c1/a", Online: true})
	if !online("laptop") {
		t.Fatalf("a node streaming on c1 is not online")
	}
	h.ok("node.online", Online{ID: "n2", Stream: "c2/b", Online: true}) // it moved to c2
	h.ok("node.online", Online{ID: "n2", Stream: "c1/a", Online: false})
	if !online("laptop") {
		t.Errorf("c1's late close took a node streaming on c2 offline")
	}
	h.ok("node.online", Online{ID: "n2", Stream: "c2/b", Online: false})
	if online("laptop") || h.f.Store().Node("laptop").LastSeen.IsZero() {
		t.Errorf("after its last stream closed: online %v, last seen %v", online("laptop"), h.f.Store().Node("laptop").LastSeen)
	}
	// c1 restarts: what its old boot marked online is offline; c2's and c1's new boot's stay.
	h.ok("node.online", Online{ID: "n2", Stream: "c1/old", Online: true})
	h.ok("node.online", Online{ID: "n1", Stream: "c2/b", Online: true})
	h.ok("node.streams-ended", StreamsEnded{Replica: "c1", Stream: "c1/new"})
	if online("laptop") || !online("wm1") {
		t.Errorf("after c1's restart: laptop online %v (want false), wm1 %v (want true)", online("laptop"), online("wm1"))
	}
	if r := h.apply("node.online", Online{ID: "nope", Stream: "c1/new", Online: true}); !errors.Is(r.Decode(nil), ErrNotFound) {
		t.Errorf("online for an unknown node: %v", r.Err)
	}
}

// TestWaitApplied: WaitApplied returns once the store reflects the index, not before, and
// gives up when its context ends.
func TestWaitApplied(t *testing.T) {
	h := newHarness(t)
	h.seed()
	next := h.index + 1
	done := make(chan error, 1)
	go func() { done <- h.f.WaitApplied(context.Background(), next) }()
	select {
	case err := <-done:
		t.Fatalf("returned %v before index %d was applied", err, next)
	case <-time.After(20 * time.Millisecond):
	}
	h.ok("user.create", User{ID: "u9", Name: "carol", Role: RoleMember})
	select {
	case err := <-done:
		if err != nil || h.f.Store().UserByName("carol") == nil {
			t.Errorf("after the apply: %v, carol %v", err, h.f.Store().UserByName("carol"))
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("still waiting after index %d was applied", next)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := h.f.WaitApplied(ctx, h.index+5); err == nil {
		t.Errorf("waiting for an index never applied returned nil")
	}
}
