package fsm

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func leaseOwner(s *Store, addr string) string {
	if l := first[addrLease](s.read(), tAddrs, "id", addr); l != nil {
		return l.Owner
	}
	return ""
}

// TestEnvironmentAddresses: each service gets its own leased address pair, whatever the
// request says; an update keeps the addresses (and observed state) of the services that
// stay, leases new ones and releases the removed ones'; delete releases them all.
func TestEnvironmentAddresses(t *testing.T) {
	h := newHarness(t)
	h.seed()
	node := h.f.Store().Node("wm1")
	h.ok("environment.create", Environment{ID: "e1", Name: "staging", OwnerID: "u2", Machine: "wm1", Services: []Service{
		{Name: "api", Image: "api", IPv4: node.IPv4, State: "running"}, // a request's addresses and state are not taken
		{Name: "db", Image: "pg"}}})
	s := h.f.Store()
	e := s.Environment("staging")
	api, db := *findService(e, "api"), *findService(e, "db")
	if api.IPv4 == node.IPv4 || api.IPv4 == db.IPv4 || api.State != "" || !strings.HasPrefix(api.IPv6, "fd12:3456:789a::") {
		t.Fatalf("services got %+v and %+v (node has %s)", api, db, node.IPv4)
	}
	for _, svc := range []Service{api, db} {
		if got := leaseOwner(s, svc.IPv4); got != "service/staging/"+svc.Name {
			t.Errorf("%s's address %s leased to %q", svc.Name, svc.IPv4, got)
		}
	}
	if n := s.Node("wm1"); n.ModifyIndex == node.ModifyIndex {
		t.Errorf("the hosting machine was not marked changed: its peers would not route the services")
	}
	if len(s.EnvironmentsOn("wm1")) != 1 || len(s.EnvironmentsOn("wm2")) != 0 {
		t.Errorf("EnvironmentsOn: %v, %v", s.EnvironmentsOn("wm1"), s.EnvironmentsOn("wm2"))
	}
	h.ok("environment.status", EnvironmentStatus{Env: "staging", Machine: "wm1", Services: []ServiceStatus{{Name: "api", State: "running", Health: "healthy"}}})

	h.ok("environment.update", EnvironmentUpdate{Name: "staging", Compose: "sealed2", Services: []Service{
		{Name: "api", Image: "api:2", Ports: []int{8080}}, {Name: "cache", Image: "redis"}}})
	e = h.f.Store().Environment("staging")
	api2, cache := findService(e, "api"), findService(e, "cache")
	if api2 == nil || cache == nil || findService(e, "db") != nil || e.Compose != "sealed2" {
		t.Fatalf("after update: %+v", e)
	}
	if api2.IPv4 != api.IPv4 || api2.IPv6 != api.IPv6 || api2.State != "running" || api2.Health != "healthy" || api2.Image != "api:2" {
		t.Errorf("api after update %+v; want its addresses and observed state kept, its image new", api2)
	}
	if cache.IPv4 == "" || cache.IPv4 == api.IPv4 || leaseOwner(h.f.Store(), cache.IPv4) != "service/staging/cache" {
		t.Errorf("cache got %s, leased to %q", cache.IPv4, leaseOwner(h.f.Store(), cache.IPv4))
	}
	if got := leaseOwner(h.f.Store(), db.IPv4); got != "" && got != "service/staging/cache" {
		t.Errorf("db's address %s still leased to %q", db.IPv4, got)
	}

	h.ok("environment.delete", ByName{"staging"})
	for _, a := range []string{api.IPv4, cache.IPv4} {
		if got := leaseOwner(h.f.Store(), a); got != "" {
			t.Errorf("address %s still leased to %q after delete", a, got)
		}
	}
}

// TestEnvironmentUpdateRefusals: an update that would remove an intercepted service is
// refused, naming the intercept and how to stop it; nothing changes.
func TestEnvironmentUpdateRefusals(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"})
	h.ok("environment.create", Environment{ID: "e1", Name: "staging", OwnerID: "u2", Machine: "wm1", Compose: "c1",
		Services: []Service{{Name: "api", Image: "api", Ports: []int{8080}}, {Name: "db", Image: "pg"}}})
	h.ok("intercept.create", Intercept{ID: "i1", Env: "staging", Service: "api", Port: 8080, Workspace: "dev", WorkspacePort: 3000})
	before := h.f.Store().Environment("staging")
	tests := []struct {
		name string
		req  EnvironmentUpdate
		code *Error
		says string
	}{
		{"intercepted service removed", EnvironmentUpdate{Name: "staging", Services: []Service{{Name: "db", Image: "pg"}}},
			ErrConflict, "intercept i1 (staging/api:8080) targets it; stop it first (meshctl intercept stop i1)"},
		{"intercepted port removed", EnvironmentUpdate{Name: "staging", Services: []Service{{Name: "api", Image: "api", Ports: []int{9090}}, {Name: "db", Image: "pg"}}},
			ErrConflict, `service "api" would no longer expose port 8080, but intercept i1`},
		{"no such environment", EnvironmentUpdate{Name: "prod", Services: []Service{{Name: "db", Image: "pg"}}}, ErrNotFound, `no environment "prod"`},
		{"no services", EnvironmentUpdate{Name: "staging"}, ErrInvalid, "has no services"},
		{"two of a name", EnvironmentUpdate{Name: "staging", Services: []Service{{Name: "api"}, {Name: "api"}}}, ErrInvalid, `two services named "api"`},
		{"bad name", EnvironmentUpdate{Name: "staging", Services: []Service{{Name: "api"}, {Name: "Web"}}}, ErrInvalid, "DNS name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := h.apply("environment.update", tt.req).Decode(nil)
			if !errors.Is(err, tt.code) || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("got %v; want %s saying %q", err, tt.code.Code, tt.says)
			}
		})
	}
	if after := h.f.Store().Environment("staging"); after != before {
		t.Errorf("a refused update changed the environment: %+v", after)
	}
}

// TestEnvironmentStatus: only the machine hosting an environment may report on it; a report
// on a service it does not have, or with a state no agent gives, is refused.
func TestEnvironmentStatus(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok("node.register", Node{ID: "n2", Name: "wm2", UserID: "u1", Tags: []string{WorkmachineTag}})
	h.ok("environment.create", Environment{ID: "e1", Name: "staging", OwnerID: "u2", Machine: "wm1", Services: []Service{{Name: "api", Image: "api"}}})
	running := []ServiceStatus{{Name: "api", State: "running", Health: "healthy", HealthOutput: strings.Repeat("x", 5000)}}
	refused := []struct {
		name string
		req  EnvironmentStatus
		code *Error
	}{
		{"another machine", EnvironmentStatus{Env: "staging", Machine: "wm2", Services: running}, ErrForbidden},
		{"unknown environment", EnvironmentStatus{Env: "prod", Machine: "wm1", Services: running}, ErrNotFound},
		{"unknown service", EnvironmentStatus{Env: "staging", Machine: "wm1", Services: []ServiceStatus{{Name: "web", State: "running"}}}, ErrNotFound},
		{"bad state", EnvironmentStatus{Env: "staging", Machine: "wm1", Services: []ServiceStatus{{Name: "api", State: "dancing"}}}, ErrInvalid},
		{"bad health", EnvironmentStatus{Env: "staging", Machine: "wm1", Services: []ServiceStatus{{Name: "api", State: "running", Health: "fine"}}}, ErrInvalid},
	}
	for _, tt := range refused {
		if err := h.apply("environment.status", tt.req).Decode(nil); !errors.Is(err, tt.code) {
			t.Errorf("%s: got %v; want %s", tt.name, err, tt.code.Code)
		}
	}
	if svc := h.f.Store().Environment("staging").Services[0]; svc.State != "" {
		t.Fatalf("a refused report was stored: %+v", svc)
	}
	h.ok("environment.status", EnvironmentStatus{Env: "staging", Machine: "wm1", Services: running})
	svc := h.f.Store().Environment("staging").Services[0]
	if svc.State != "running" || svc.Health != "healthy" || len(svc.HealthOutput) != maxHealthOutput || svc.StateAt.IsZero() {
		t.Errorf("stored %+v", svc)
	}
}

// TestEnvironmentGeneration: create, update, up and down each give the environment a new
// generation (what should run changed); status reports keep the one they were observed
// under.
func TestEnvironmentGeneration(t *testing.T) {
	h := newHarness(t)
	h.seed()
	gen := func() uint64 { return h.f.Store().Environment("staging").Generation }
	h.ok("environment.create", Environment{ID: "e1", Name: "staging", OwnerID: "u2", Machine: "wm1", Services: []Service{{Name: "api", Image: "api"}}})
	created := gen()
	if created == 0 {
		t.Fatal("a created environment has no generation")
	}
	h.ok("environment.status", EnvironmentStatus{Env: "staging", Machine: "wm1", Services: []ServiceStatus{{Name: "api", State: "running", Generation: created}}})
	if svc := h.f.Store().Environment("staging").Services[0]; svc.Generation != created {
		t.Errorf("a report under generation %d stored as %d", created, svc.Generation)
	}
	last := created
	for _, step := range []struct {
		cmd string
		req any
	}{
		{"environment.update", EnvironmentUpdate{Name: "staging", Compose: "sealed2", Services: []Service{{Name: "api", Image: "api:2"}}}},
		{"environment.set", WorkspaceState{Name: "staging", Desired: Stopped}},
		{"environment.set", WorkspaceState{Name: "staging", Desired: Running}},
	} {
		h.ok(step.cmd, step.req)
		if g := gen(); g <= last {
			t.Errorf("%s %+v: generation %d, want above %d", step.cmd, step.req, g, last)
		}
		last = gen()
	}
	if svc := h.f.Store().Environment("staging").Services[0]; svc.Generation != created {
		t.Errorf("the service's observed generation changed without a report: %d", svc.Generation)
	}
}

// TestBackupServiceLeases: a backup whose service holds an address not leased to it (two
// things would share it) is refused.
func TestBackupServiceLeases(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok("environment.create", Environment{ID: "e1", Name: "staging", OwnerID: "u2", Machine: "wm1", Services: []Service{{Name: "api", Image: "api"}}})
	snap := snapshotBytes(t, h.f.Store())
	if _, err := ParseBackup(snap); err != nil {
		t.Fatalf("a sound backup refused: %v", err)
	}
	svc := h.f.Store().Environment("staging").Services[0]
	node := h.f.Store().Node("wm1")
	bad := strings.Replace(string(snap), `"ipv4":"`+svc.IPv4+`","ipv6"`, `"ipv4":"`+node.IPv4+`","ipv6"`, 1)
	if bad == string(snap) {
		t.Fatal("test bug: the service's address is not in the backup as expected")
	}
	_, err := ParseBackup([]byte(bad))
	if err == nil || !strings.Contains(err.Error(), `service "api": address "`+node.IPv4+`" is not leased to it`) {
		t.Errorf("backup giving a service the node's address: %v", err)
	}
}

// TestNodeAtService: an SSH session from a service's address is from no machine: a service
// is not its machine's user.
func TestNodeAtService(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok("environment.create", Environment{ID: "e1", Name: "staging", OwnerID: "u2", Machine: "wm1", Services: []Service{{Name: "api", Image: "api"}}})
	svc := h.f.Store().Environment("staging").Services[0]
	h.ok("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img"})
	tx := &tx{Txn: h.f.store.current().Txn(false)}
	tx.b = &batch{before: tx.Txn, restored: true}
	for _, a := range []string{svc.IPv4, svc.IPv6, svc.IPv4 + ":22"} {
		if n := nodeAt(tx, a); n != nil {
			t.Errorf("nodeAt(%s) = %s; want none", a, n.Name)
		}
	}
	if n := nodeAt(tx, h.f.Store().Workspace("dev").IPv4); n == nil || n.Name != "wm1" {
		t.Errorf("nodeAt(workspace) = %v; want wm1", n)
	}
}

// TestEnvironmentFromBeforeAddresses: an environment stored before services had addresses
// restores from a backup, and gets its addresses at its next env up.
func TestEnvironmentFromBeforeAddresses(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok("environment.create", Environment{ID: "e1", Name: "staging", OwnerID: "u2", Machine: "wm1", Services: []Service{{Name: "api", Image: "api"}}})
	svc := h.f.Store().Environment("staging").Services[0]
	var old []string
	for _, l := range strings.Split(string(snapshotBytes(t, h.f.Store())), "\n") {
		if strings.Contains(l, `"owner":"service/`) {
			continue // its lease
		}
		old = append(old, strings.Replace(l, `,"ipv4":"`+svc.IPv4+`","ipv6":"`+svc.IPv6+`"`, "", 1))
	}
	snap := strings.Join(old, "\n")
	if strings.Contains(snap, svc.IPv6) {
		t.Fatal("test bug: the service's addresses are still in the backup")
	}
	if _, err := ParseBackup([]byte(snap)); err != nil {
		t.Fatalf("a backup from before addresses refused: %v", err)
	}
	h2 := newHarness(t)
	if err := h2.f.Restore(io.NopCloser(strings.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	h2.index = h.index
	h2.ok("environment.set", WorkspaceState{Name: "staging", Desired: Running})
	got := h2.f.Store().Environment("staging").Services[0]
	if got.IPv4 == "" || got.IPv6 == "" || leaseOwner(h2.f.Store(), got.IPv4) != "service/staging/api" {
		t.Errorf("after env up: %+v, leased to %q", got, leaseOwner(h2.f.Store(), got.IPv4))
	}
}
