package control

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"tailscale.com/types/ipproto"
	"tailscale.com/wgengine/filter"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
)

// intercept starts a personal intercept of staging/api:8080 (on wm1) to a-ws:3000 (on wm2).
func (w *world) intercept(id string) {
	w.l.must(w.t, "intercept.create", fsm.Intercept{ID: id, Env: "staging", Service: "api", Port: 8080, Workspace: "a-ws",
		WorkspacePort: 3000, OwnerID: "u-a", Headers: []fsm.HeaderMatch{{Name: "x-dev", Value: id}}})
}

// TestMachineStateIntercepts: the machine running the service, and only it, gets the
// intercept with the workspace's addresses and the environment's ID; its digest changes at
// start and stop, not at a status report; the start wakes its long poll.
func TestMachineStateIntercepts(t *testing.T) {
	w := newWorld(t)
	before, _ := w.s.machineState(w.store(), "wm1")
	nodesAt := w.store().TableIndex(fsm.TableNodes)
	w.intercept("i1")
	if w.store().TableIndex(fsm.TableNodes) == nodesAt {
		t.Errorf("starting an intercept does not wake machine state polls (nodes table unchanged)")
	}
	st, _ := w.s.machineState(w.store(), "wm1")
	want := []api.InterceptSpec{{ID: "i1", EnvID: "e1", Env: "staging", Service: "api", Port: 8080,
		Headers:    []api.HeaderMatch{{Name: "X-Dev", Value: "i1"}},
		TargetIPv4: w.addr("a-ws", false).String(), TargetIPv6: w.addr("a-ws", true).String(), TargetPort: 3000}}
	if diff := cmp.Diff(want, st.Intercepts); diff != "" {
		t.Errorf("wm1's intercepts (-want +got):\n%s", diff)
	}
	if st.Digest == before.Digest {
		t.Errorf("the digest did not change with the intercept")
	}
	for _, m := range []string{"wm2", "r-laptop"} {
		if other, _ := w.s.machineState(w.store(), m); len(other.Intercepts) != 0 {
			t.Errorf("%s got intercepts it does not run: %+v", m, other.Intercepts)
		}
	}
	w.l.must(t, "intercept.status", fsm.InterceptStatus{Machine: "wm1", Intercepts: []fsm.InterceptObserved{{ID: "i1", State: "active", Requests: 4}}})
	if same, _ := w.s.machineState(w.store(), "wm1"); same.Digest != st.Digest {
		t.Errorf("a status report changed the digest")
	}
	w.l.must(t, "intercept.delete", fsm.ByID{ID: "i1"})
	if after, _ := w.s.machineState(w.store(), "wm1"); after.Digest != before.Digest || len(after.Intercepts) != 0 {
		t.Errorf("after the stop: digest %s (before the start %s), intercepts %+v", after.Digest, before.Digest, after.Intercepts)
	}
}

// TestInterceptReports: the service's machine's report is recorded once; the same again
// writes nothing; another machine's report, or one on an unknown intercept, is not.
func TestInterceptReports(t *testing.T) {
	w := newWorld(t)
	w.intercept("i1")
	ctx := context.Background()
	rep := []api.InterceptReport{{ID: "i1", State: api.InterceptTargetDown, Reason: "a-ws:3000 refused", Connections: 2}}
	w.s.recordIntercepts(ctx, w.store(), w.store().Node("wm2"), rep)
	if ic := w.store().Intercept("i1"); ic.State != "pending" {
		t.Fatalf("wm2's report on wm1's intercept was stored: %+v", ic)
	}
	w.s.recordIntercepts(ctx, w.store(), w.store().Node("wm1"), append(rep, api.InterceptReport{ID: "ghost", State: api.InterceptActive}))
	if ic := w.store().Intercept("i1"); ic.State != api.InterceptTargetDown || ic.Connections != 2 || ic.Reason == "" {
		t.Errorf("after wm1's report: %+v", ic)
	}
	index := w.l.index
	w.s.recordIntercepts(ctx, w.store(), w.store().Node("wm1"), rep)
	if w.l.index != index {
		t.Errorf("the same report again wrote %d more entries", w.l.index-index)
	}
}

// TestInterceptFilter: under a policy that lets services reach nothing, an intercept lets
// its service reach its workspace's port over TCP, and no other port, service, protocol or
// workspace; the new filter reaches the workspace's machine; the stop takes it back.
func TestInterceptFilter(t *testing.T) {
	w := newWorld(t)
	w.l.must(t, "policy.set", fsm.Policy{Text: `{"acls": [{"action": "accept", "src": ["alice"], "dst": ["*:*"]}]}`})
	type flow struct {
		from, to string
		port     uint16
	}
	check := func(when string, want map[flow]bool) {
		t.Helper()
		f := w.packetFilter()
		for c, ok := range want {
			for _, v6 := range []bool{false, true} {
				if got := f.CheckTCP(w.addr(c.from, v6), w.addr(c.to, v6), c.port) == filter.Accept; got != ok {
					t.Errorf("%s: %s → %s:%d (IPv6 %v) allowed %v; want %v", when, c.from, c.to, c.port, v6, got, ok)
				}
			}
		}
	}
	check("before", map[flow]bool{{"staging/api", "a-ws", 3000}: false})
	var st streamState
	if w.s.mapResponse(w.store(), "nodekey:wm2", &st) == nil {
		t.Fatal("no map for wm2")
	}
	w.intercept("i1")
	if res, _ := w.s.delta(w.store(), "wm2", &st); res == nil || res.PacketFilter == nil {
		t.Errorf("the workspace's machine got no new packet filter at the start: %+v", res)
	}
	check("intercepted", map[flow]bool{
		{"staging/api", "a-ws", 3000}:     true,
		{"staging/api", "a-ws", 3001}:     false, // another port of the workspace
		{"staging/api", "a-ws", 22}:       false,
		{"staging/api", "a-ws2", 3000}:    false, // another workspace
		{"staging/api", "b-ws", 3000}:     false,
		{"staging/db", "a-ws", 3000}:      false, // another service
		{"prod/web", "a-ws", 3000}:        false,
		{"staging/api", "wm2", 3000}:      false, // the workspace's machine
		{"b-laptop", "a-ws", 3000}:        false, // the policy still holds
		{"a-laptop", "staging/api", 8080}: true,
	})
	if f := w.packetFilter(); f.Check(w.addr("staging/api", false), w.addr("a-ws", false), 3000, ipproto.UDP) == filter.Accept {
		t.Errorf("UDP from the service to the workspace's port is allowed; want TCP only")
	}
	w.l.must(t, "intercept.delete", fsm.ByID{ID: "i1"})
	check("stopped", map[flow]bool{{"staging/api", "a-ws", 3000}: false})
}
