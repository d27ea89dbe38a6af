package fsm

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// interceptHarness: alice's workspaces dev and dev2 on wm1, her environment staging with api
// (ports 8080 and 9000) and db (no ports) on wm1.
func interceptHarness(t *testing.T) *harness {
	h := newHarness(t)
	h.seed()
	h.ok("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"})
	h.ok("workspace.create", Workspace{ID: "w2", Name: "dev2", OwnerID: "u2", Machine: "wm1", Image: "img"})
	h.ok("environment.create", Environment{ID: "e1", Name: "staging", OwnerID: "u2", Machine: "wm1",
		Services: []Service{{Name: "api", Image: "api", Ports: []int{8080, 9000}}, {Name: "db", Image: "pg"}}})
	return h
}

func personal(id, ws string, hs ...string) Intercept {
	ic := Intercept{ID: id, Env: "staging", Service: "api", Port: 8080, Workspace: ws, WorkspacePort: 3000, OwnerID: "u2"}
	for i := 0; i+1 < len(hs); i += 2 {
		ic.Headers = append(ic.Headers, HeaderMatch{hs[i], hs[i+1]})
	}
	return ic
}

// TestInterceptModes: several personal intercepts share a port when their header sets
// differ; the same set twice, a second global, and a global beside personal ones (either
// way round) are refused, naming the intercept in the way and how to stop it.
func TestInterceptModes(t *testing.T) {
	h := interceptHarness(t)
	var a Intercept
	h.ok("intercept.create", personal("i1", "dev", "x-dev", "alice")).Decode(&a)
	if a.Mode() != InterceptPersonal || a.Headers[0].Name != "X-Dev" || a.State != "pending" {
		t.Errorf("created %+v; want personal, header X-Dev, pending", a)
	}
	h.ok("intercept.create", personal("i2", "dev2", "X-Dev", "bob"))
	h.ok("intercept.create", personal("i3", "dev2", "X-Dev", "bob", "X-Tenant", "t1"))
	refused := []struct {
		ic   Intercept
		says string
	}{
		{personal("i9", "dev2", "X-DEV", "alice"), "same headers: intercept i1"},
		{personal("i9", "dev2", "X-Tenant", "t1", "x-dev", "bob"), "same headers: intercept i3"},
		{personal("i9", "dev2"), "global and personal intercepts cannot share a port: intercept i1"},
	}
	for _, r := range refused {
		res := h.apply("intercept.create", r.ic)
		if !errors.Is(res.Decode(nil), ErrConflict) || !strings.Contains(res.Err.Msg, r.says) || !strings.Contains(res.Err.Msg, "meshctl intercept stop") {
			t.Errorf("%+v: %v; want a conflict about %q", r.ic.Headers, res.Err, r.says)
		}
	}
	// On another port of the same service, a global stands alone.
	g := personal("g1", "dev")
	g.Port, g.Name = 9000, "api-all"
	h.ok("intercept.create", g)
	g2 := personal("g2", "dev2")
	g2.Port = 9000
	if res := h.apply("intercept.create", g2); !errors.Is(res.Decode(nil), ErrConflict) || !strings.Contains(res.Err.Msg, "already intercepted (global): intercept api-all") {
		t.Errorf("a second global: %v", res.Err)
	}
	if res := h.apply("intercept.create", personal("i9", "dev2", "X-Dev", "carol")); res.Err != nil {
		t.Errorf("a third personal intercept: %v", res.Err)
	}
	if ic := h.f.Store().Intercept("api-all"); ic == nil || ic.ID != "g1" {
		t.Errorf("by name: %+v", ic)
	}
}

// TestInterceptStatus: the machine running the service reports; a report that changes
// nothing writes nothing; StateAt moves with the state only; ended intercepts are skipped.
func TestInterceptStatus(t *testing.T) {
	h := interceptHarness(t)
	h.ok("intercept.create", personal("i1", "dev", "X-Dev", "alice"))
	st := h.f.Store()
	report := func(obs ...InterceptObserved) {
		t.Helper()
		h.ok("intercept.status", InterceptStatus{Machine: "wm1", Intercepts: obs})
	}
	report(InterceptObserved{ID: "i1", State: "active", Connections: 1, Requests: 2}, InterceptObserved{ID: "gone", State: "active"})
	ic := st.Intercept("i1")
	if ic.State != "active" || ic.Requests != 2 || ic.Connections != 1 {
		t.Fatalf("after a report: %+v", ic)
	}
	since, idx := ic.StateAt, st.TableIndex(TableIntercepts)
	if !ic.Holds(InterceptObserved{ID: "i1", State: "active", Connections: 1, Requests: 2}) {
		t.Errorf("Holds says an identical report changes something")
	}
	report(InterceptObserved{ID: "i1", State: "active", Connections: 1, Requests: 2})
	if st.TableIndex(TableIntercepts) != idx {
		t.Errorf("an identical report wrote the intercept again")
	}
	report(InterceptObserved{ID: "i1", State: "active", Connections: 1, Requests: 5})
	if ic := st.Intercept("i1"); ic.Requests != 5 || !ic.StateAt.Equal(since) {
		t.Errorf("counts changed: %+v; want requests 5 and the same StateAt %v", ic, since)
	}
	report(InterceptObserved{ID: "i1", State: "target-down", Reason: "dev:3000 refused", Requests: 5, Connections: 1})
	if ic := st.Intercept("i1"); ic.State != "target-down" || ic.StateAt.Equal(since) || ic.Reason == "" {
		t.Errorf("state changed: %+v; want target-down since now", ic)
	}
}

// TestInterceptsEnd: deleting the workspace, the environment or the owner ends their
// intercepts in the same command, which the audit event says.
func TestInterceptsEnd(t *testing.T) {
	h := interceptHarness(t)
	h.ok("intercept.create", personal("i1", "dev", "X-Dev", "alice"))
	h.ok("intercept.create", personal("i2", "dev2", "X-Dev", "bob"))
	h.ok("user.create", User{ID: "u3", Name: "carol", Role: RoleAdmin})
	byCarol := personal("i3", "dev2", "X-Dev", "carol")
	byCarol.OwnerID = "u3"
	h.ok("intercept.create", byCarol)
	h.ok("user.delete", ByName{"carol"})
	if h.f.Store().Intercept("i3") != nil {
		t.Errorf("deleting carol left her intercept")
	}
	r := h.ok("workspace.delete", ByName{"dev"})
	if h.f.Store().Intercept("i1") != nil || h.f.Store().Intercept("i2") == nil {
		t.Errorf("deleting dev: i1 should end, i2 stay")
	}
	ev := h.f.Store().Audit(r.Index-1, 1)
	if len(ev) != 1 || !strings.Contains(ev[0].Detail, "ended intercept(s) i1 (staging/api:8080 to dev:3000)") {
		t.Errorf("audit of the delete: %+v", ev)
	}
	h.ok("environment.delete", ByName{"staging"})
	if got := h.f.Store().Intercepts(""); len(got) != 0 {
		t.Errorf("after deleting the environment: %d intercepts left", len(got))
	}
	if _, err := ParseBackup(snapshotBytes(t, h.f.Store())); err != nil {
		t.Errorf("backup after the ends: %v", err)
	}
}

// TestInterceptBackup: a backup with intercepts passes its check; one with a global and a
// personal intercept on one port, or headers out of canonical form, does not.
func TestInterceptBackup(t *testing.T) {
	h := interceptHarness(t)
	h.ok("intercept.create", personal("i1", "dev", "X-Dev", "alice"))
	good := snapshotBytes(t, h.f.Store())
	if _, err := ParseBackup(good); err != nil {
		t.Fatalf("a sound backup: %v", err)
	}
	for _, bad := range []struct{ from, to string }{
		{`"headers":[{"name":"X-Dev","value":"alice"}]`, `"headers":[{"name":"x-dev","value":"alice"}]`},
		{`"headers":[{"name":"X-Dev","value":"alice"}],`, ``},
	} {
		b := strings.Replace(string(good), bad.from, bad.to, 1)
		if b == string(good) {
			t.Fatalf("the backup has no %s", bad.from)
		}
		if _, err := ParseBackup([]byte(b)); err == nil {
			t.Errorf("a backup with %s passed its check", bad.to)
		}
	}
	if diff := cmp.Diff(1, len(h.f.Store().Intercepts(""))); diff != "" {
		t.Error(diff)
	}
}
