package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshwork.dev/coord/api"
	"meshwork.dev/workspace/compose"
	"meshwork.dev/workspace/ctrd"
)

func (c *fakeCoord) setEnvs(envs ...api.EnvironmentSpec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Index++
	c.st.Environments = envs
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *fakeCoord) svc(env, name string) api.ServiceReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.svcs[env+"/"+name]
}

// envSpec is environment name (ID "e_"+name) with yaml, its services given addresses in
// the order named.
func envSpec(name, desired, yaml string, svcs ...string) api.EnvironmentSpec {
	e := api.EnvironmentSpec{ID: "e_" + name, Name: name, User: "alice", Desired: desired, Compose: yaml,
		Allow: []string{"100.64.9.9"}}
	for i, s := range svcs {
		e.Services = append(e.Services, api.ServiceAddr{Name: s, IPv4: fmt.Sprintf("100.90.0.%d", i+1), IPv6: fmt.Sprintf("fd7a:115c:a1e0::9:%d", i+1)})
	}
	return e
}

func (f *fakeServices) count(m map[string]int, id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return m[id]
}

func (f *fakeServices) state(id string) (ctrd.ServiceStatus, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sv, ok := f.svcs[id]
	if !ok {
		return ctrd.ServiceStatus{}, false
	}
	return sv.st, true
}

const orderYAML = `
services:
  redis:
    image: redis
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 10ms
      retries: 1000
  migrate:
    image: job-exit-0
  api:
    image: api
    depends_on:
      redis:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
`

func TestEnvStartOrder(t *testing.T) {
	m, c := newFakeMachine(t.TempDir()), newFakeCoord()
	var healthy atomic.Bool
	m.health = func(id string) (int, string, error) {
		if healthy.Load() {
			return 0, "PONG", nil
		}
		return 1, "Could not connect to Redis", nil
	}
	c.setEnvs(envSpec("staging", api.Running, orderYAML, "api", "migrate", "redis"))
	routes := startAgent(t, m, c)

	eventually(t, "migrate done", func() bool { r := c.svc("staging", "migrate"); return r.State == api.ServiceExited })
	eventually(t, "redis checked", func() bool { return c.svc("staging", "redis").HealthOutput != "" })
	r := c.svc("staging", "redis")
	if r.State != api.ServiceRunning || r.Health != api.HealthStarting || r.HealthOutput != "Could not connect to Redis" {
		t.Errorf("redis before its check passes: %+v, want running, health starting, the check's output", r)
	}
	if r := c.svc("staging", "api"); r.State != api.ServicePending || !strings.Contains(r.Reason, "redis") {
		t.Errorf("api while redis is not healthy: %+v, want pending, waiting for redis", r)
	}
	if n := m.count(m.starts, "e_staging.api"); n != 0 {
		t.Fatalf("api started %d times before redis was healthy", n)
	}
	healthy.Store(true)
	eventually(t, "api running", func() bool { return c.svc("staging", "api").State == api.ServiceRunning })
	m.with(func() {
		api := slices.Index(m.order, "e_staging.api")
		if api < slices.Index(m.order, "e_staging.redis") || api < slices.Index(m.order, "e_staging.migrate") {
			t.Errorf("start order %v: api before what it depends on", m.order)
		}
		if !slices.ContainsFunc(m.execs, func(a []string) bool { return slices.Equal(a, []string{"redis-cli", "ping"}) }) {
			t.Errorf("healthcheck ran %v, want redis-cli ping", m.execs)
		}
	})
	eventually(t, "redis reported healthy", func() bool {
		r := c.svc("staging", "redis")
		return r.Health == api.HealthHealthy && r.HealthOutput == "PONG"
	})
	if r := c.svc("staging", "migrate"); r.ExitCode != 0 || r.Reason != "" {
		t.Errorf("migrate: %+v, want exited 0", r)
	}
	eventually(t, "service routes advertised", func() bool { return len(routes()) == 6 })
	if !slices.Contains(routes(), netip.MustParsePrefix("100.90.0.3/32")) || !slices.Contains(routes(), netip.MustParsePrefix("fd7a:115c:a1e0::9:3/128")) {
		t.Errorf("routes %v lack redis's addresses", routes())
	}
}

func TestEnvFailuresStayWithTheirService(t *testing.T) {
	m, c := newFakeMachine(t.TempDir()), newFakeCoord()
	c.setEnvs(envSpec("staging", api.Running, `
services:
  db: {image: bad}
  web: {image: web, depends_on: [db]}
  cache: {image: cache}
  migrate: {image: job-exit-3}
  api:
    image: api
    depends_on: {migrate: {condition: service_completed_successfully}}
`, "api", "cache", "db", "migrate", "web"))
	startAgent(t, m, c)

	eventually(t, "cache running", func() bool { return c.svc("staging", "cache").State == api.ServiceRunning })
	for _, tc := range []struct{ svc, state, reason string }{
		{"db", api.ServiceFailed, `image "bad": not found`},
		{"web", api.ServiceFailed, `depends on db (service_started), but db failed: image "bad": not found`},
		{"migrate", api.ServiceExited, "exited with code 3"},
		{"api", api.ServiceFailed, "depends on migrate (service_completed_successfully), but migrate exited with code 3"},
	} {
		eventually(t, tc.svc+" "+tc.state, func() bool { return c.svc("staging", tc.svc).State == tc.state })
		if r := c.svc("staging", tc.svc); r.Reason != tc.reason {
			t.Errorf("%s: reason %q, want %q", tc.svc, r.Reason, tc.reason)
		}
	}
	if r := c.svc("staging", "migrate"); r.ExitCode != 3 {
		t.Errorf("migrate exit code %d, want 3", r.ExitCode)
	}
	for _, id := range []string{"e_staging.web", "e_staging.api"} {
		if n := m.count(m.starts, id); n != 0 {
			t.Errorf("%s started although what it depends on failed", id)
		}
	}
}

func TestEnvStartOrderRefusesBadCompose(t *testing.T) {
	m, c := newFakeMachine(t.TempDir()), newFakeCoord()
	c.setEnvs(envSpec("staging", api.Running, "services:\n  web:\n    image: [\n", "web"))
	startAgent(t, m, c)
	eventually(t, "web failed", func() bool { return c.svc("staging", "web").State == api.ServiceFailed })
	if r := c.svc("staging", "web"); !strings.Contains(r.Reason, "compose file") {
		t.Errorf("reason %q does not say the compose file is broken", r.Reason)
	}
}

// healthRun runs checkHealth of hc against answers and returns every report, until stop.
func healthRun(t *testing.T, hc *compose.Healthcheck, answer func(n int) (int, error), stop func([]api.ServiceReport) bool) []api.ServiceReport {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reports := make(chan api.ServiceReport, 1000)
	fs := newFakeServices(t.TempDir())
	var n atomic.Int32
	fs.health = func(string) (int, string, error) {
		i := int(n.Add(1))
		code, err := answer(i)
		return code, fmt.Sprintf("probe %d", i), err
	}
	r := &svcRunner{name: "db", svc: fs, b: newBoard(ctx, "env", reports)}
	r.b.update("db", func(s *api.ServiceReport) { s.State, s.Health = api.ServiceRunning, api.HealthStarting })
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.checkHealth(ctx, "env.db", hc, time.Now())
	}()
	defer func() { cancel(); <-done }()
	var got []api.ServiceReport
	for deadline := time.After(5 * time.Second); !stop(got); {
		select {
		case rep := <-reports:
			got = append(got, rep)
		case <-deadline:
			t.Fatalf("health reports %+v", got)
		}
	}
	return got
}

func TestEnvHealthcheck(t *testing.T) {
	healths := func(rs []api.ServiceReport) string {
		var out []string
		for _, r := range rs[1:] {
			out = append(out, r.Health+":"+r.HealthOutput)
		}
		return strings.Join(out, " ")
	}
	last := func(h string) func([]api.ServiceReport) bool {
		return func(rs []api.ServiceReport) bool { return len(rs) > 0 && rs[len(rs)-1].Health == h }
	}
	// Two failures make it unhealthy, a pass healthy, two more failures unhealthy again.
	got := healthRun(t, &compose.Healthcheck{Interval: 5 * time.Millisecond, Retries: 2}, func(n int) (int, error) {
		if n == 3 {
			return 0, nil
		}
		return 1, nil
	}, func(rs []api.ServiceReport) bool { return len(rs) >= 6 })
	want := "starting:probe 1 unhealthy:probe 2 healthy:probe 3 healthy:probe 4 unhealthy:probe 5"
	if h := healths(got); h != want {
		t.Errorf("health went %s\nwant %s", h, want)
	}

	// Failures within start_period do not count; the first after it does.
	began := time.Now()
	got = healthRun(t, &compose.Healthcheck{Interval: 5 * time.Millisecond, Retries: 1, StartPeriod: 150 * time.Millisecond},
		func(int) (int, error) { return 1, nil }, last(api.HealthUnhealthy))
	if took := time.Since(began); took < 150*time.Millisecond {
		t.Errorf("unhealthy after %v, within the start period", took)
	}
	if len(got) < 4 || got[1].Health != api.HealthStarting {
		t.Errorf("failures in the start period: %s, want several while starting", healths(got))
	}

	// A probe that times out fails, saying so.
	got = healthRun(t, &compose.Healthcheck{Interval: 5 * time.Millisecond, Retries: 1, Timeout: time.Second},
		func(int) (int, error) { return -1, fmt.Errorf("exec: %w", context.DeadlineExceeded) }, last(api.HealthUnhealthy))
	if out := got[len(got)-1].HealthOutput; out != "healthcheck timed out after 1s" {
		t.Errorf("timed-out probe's output %q", out)
	}
}

func TestHealthArgv(t *testing.T) {
	for _, tc := range []struct{ test, want []string }{
		{[]string{"CMD", "redis-cli", "ping"}, []string{"redis-cli", "ping"}},
		{[]string{"CMD-SHELL", "pg_isready -U app"}, []string{"/bin/sh", "-c", "pg_isready -U app"}},
	} {
		if got := healthArgv(tc.test); !slices.Equal(got, tc.want) {
			t.Errorf("healthArgv(%q) = %q, want %q", tc.test, got, tc.want)
		}
	}
}

func TestEnvRestartPolicies(t *testing.T) {
	m, c := newFakeMachine(t.TempDir()), newFakeCoord()
	c.setEnvs(envSpec("ci", api.Running, `
services:
  always: {image: job-exit-1, restart: always}
  capped: {image: job-exit-1, restart: "on-failure:2"}
  clean: {image: job-exit-0, restart: on-failure}
  once: {image: job-exit-0}
  crash: {image: job-exit-4, restart: "no"}
  web: {image: web, restart: unless-stopped}
`, "always", "capped", "clean", "crash", "once", "web"))
	startAgent(t, m, c)

	eventually(t, "capped gives up", func() bool { return c.svc("ci", "capped").State == api.ServiceExited })
	for _, tc := range []struct {
		svc            string
		code, restarts int
		reason         string
	}{
		{"capped", 1, 2, "exited with code 1 after 2 restarts (on-failure:2)"},
		{"clean", 0, 0, ""},
		{"once", 0, 0, ""},
		{"crash", 4, 0, "exited with code 4"},
	} {
		eventually(t, tc.svc+" exited", func() bool { return c.svc("ci", tc.svc).State == api.ServiceExited })
		r := c.svc("ci", tc.svc)
		if r.ExitCode != tc.code || r.Restarts != tc.restarts || r.Reason != tc.reason {
			t.Errorf("%s: %+v, want exit code %d after %d restarts, reason %q", tc.svc, r, tc.code, tc.restarts, tc.reason)
		}
		if n := m.count(m.starts, "e_ci."+tc.svc); n != tc.restarts+1 {
			t.Errorf("%s ran %d times, want %d", tc.svc, n, tc.restarts+1)
		}
	}
	eventually(t, "always restarted thrice", func() bool { return c.svc("ci", "always").Restarts >= 3 })

	eventually(t, "web running", func() bool { return c.svc("ci", "web").State == api.ServiceRunning })
	m.kill("e_ci.web", 137)
	eventually(t, "web restarted", func() bool {
		r := c.svc("ci", "web")
		return r.State == api.ServiceRunning && r.Restarts == 1 && r.ExitCode == 137
	})
	if n := m.count(m.starts, "e_ci.web"); n != 2 {
		t.Errorf("web started %d times, want 2", n)
	}
}

func TestRestartDelay(t *testing.T) {
	var d restartDelay
	var got []time.Duration
	for range 12 {
		got = append(got, d.next(time.Second))
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("delays (-want +got):\n%s", diff)
	}
	if got := d.next(10 * time.Second); got != 100*time.Millisecond {
		t.Errorf("after 10 s running: %v, want 100ms", got)
	}
}

const updateYAML = `
services:
  redis: {image: redis, volumes: [data:/data]}
  api: {image: %s, depends_on: [redis]}
volumes:
  data: {}
`

func TestEnvUpdate(t *testing.T) {
	m, c := newFakeMachine(t.TempDir()), newFakeCoord()
	v1 := envSpec("staging", api.Running, fmt.Sprintf(updateYAML, "api:1"), "api", "redis")
	c.setEnvs(v1)
	startAgent(t, m, c)
	eventually(t, "api running", func() bool { return c.svc("staging", "api").State == api.ServiceRunning })
	redisPID := func() int { st, _ := m.state("e_staging.redis"); return st.PID }
	pid := redisPID()

	v2 := v1
	v2.Compose = fmt.Sprintf(updateYAML, "api:2")
	c.setEnvs(v2)
	eventually(t, "api recreated", func() bool { return m.count(m.creates, "e_staging.api") == 2 })
	eventually(t, "api running again", func() bool { st, _ := m.state("e_staging.api"); return st.State == ctrd.StateRunning })
	if n := m.count(m.creates, "e_staging.redis"); n != 1 || redisPID() != pid {
		t.Errorf("redis, unchanged, was recreated or restarted: %d containers, pid %d (was %d)", n, redisPID(), pid)
	}

	v3 := v2
	v3.Allow = []string{"100.64.9.9", "100.64.7.7"}
	c.setEnvs(v3)
	eventually(t, "allow set live", func() bool { return m.count(m.peersSet, "e_staging.redis") == 1 })
	eventually(t, "allow set live on api", func() bool { return m.count(m.peersSet, "e_staging.api") == 1 })
	m.with(func() {
		want := []netip.Prefix{netip.MustParsePrefix("100.64.7.7/32"), netip.MustParsePrefix("100.64.9.9/32")}
		if !slices.Equal(m.allows["e_staging.redis"], want) {
			t.Errorf("redis allows %v, want %v", m.allows["e_staging.redis"], want)
		}
		if m.creates["e_staging.redis"] != 1 || m.creates["e_staging.api"] != 2 || m.starts["e_staging.redis"] != 1 {
			t.Errorf("an Allow change recreated or restarted a service: creates %v, starts %v", m.creates, m.starts)
		}
	})

	v4 := envSpec("staging", api.Running, "services:\n  redis: {image: redis, volumes: [data:/data]}\nvolumes:\n  data: {}\n", "redis")
	v4.Allow, v4.Services = v3.Allow, v3.Services[1:] // redis keeps its addresses
	c.setEnvs(v4)
	eventually(t, "api removed", func() bool { _, ok := m.state("e_staging.api"); return !ok })
	eventually(t, "redis told api is gone", func() bool {
		var hosts []ctrd.HostEntry
		m.with(func() { hosts = m.hosts["e_staging.redis"] })
		return len(hosts) == 2 && hosts[0].Names[0] == "redis" && hosts[1].Names[0] == "redis" // IPv4 and IPv6
	})
	m.with(func() {
		if len(m.volDels) != 0 {
			t.Errorf("removing a service removed the environment's volumes")
		}
		if m.creates["e_staging.redis"] != 1 || m.starts["e_staging.redis"] != 1 {
			t.Errorf("removing api recreated or restarted redis: creates %v, starts %v", m.creates, m.starts)
		}
	})
}

func TestEnvDownUpDelete(t *testing.T) {
	m, c := newFakeMachine(t.TempDir()), newFakeCoord()
	yaml := fmt.Sprintf(updateYAML, "api")
	c.setEnvs(envSpec("staging", api.Running, yaml, "api", "redis"))
	routes := startAgent(t, m, c)
	eventually(t, "api running", func() bool { return c.svc("staging", "api").State == api.ServiceRunning })

	c.setEnvs(envSpec("staging", api.Stopped, yaml, "api", "redis"))
	for _, s := range []string{"api", "redis"} {
		eventually(t, s+" stopped", func() bool { return c.svc("staging", s).State == api.ServiceStopped })
		if st, ok := m.state("e_staging." + s); !ok || st.State != ctrd.StateStopped {
			t.Errorf("%s after env down: %+v (exists %v), want a stopped container", s, st, ok)
		}
	}
	m.with(func() {
		if len(m.volDels) != 0 || !m.volumes["e_staging"] {
			t.Errorf("env down removed volumes: %v", m.volDels)
		}
	})
	if len(routes()) != 4 {
		t.Errorf("env down withdrew the services' addresses: %v", routes())
	}

	c.setEnvs(envSpec("staging", api.Running, yaml, "api", "redis"))
	eventually(t, "api running again", func() bool { return m.count(m.starts, "e_staging.api") == 2 })
	eventually(t, "api reported running", func() bool { return c.svc("staging", "api").State == api.ServiceRunning })
	m.with(func() {
		if i := len(m.order); i < 2 || m.order[i-2] != "e_staging.redis" || m.order[i-1] != "e_staging.api" {
			t.Errorf("env up started %v, want redis then api", m.order)
		}
	})

	c.setEnvs()
	eventually(t, "services removed", func() bool { l, _ := m.ListServices(context.Background()); return len(l) == 0 })
	eventually(t, "volumes removed", func() bool {
		var dels []string
		m.with(func() { dels = slices.Clone(m.volDels) })
		return slices.Equal(dels, []string{"e_staging"})
	})
	eventually(t, "routes withdrawn", func() bool { return len(routes()) == 0 })
}

func TestEnvAdoption(t *testing.T) {
	m, c := newFakeMachine(t.TempDir()), newFakeCoord()
	env := envSpec("staging", api.Running, orderYAML, "api", "migrate", "redis")
	plan, err := planEnv(env, "mesh.internal")
	if err != nil {
		t.Fatal(err)
	}
	left := func(id, hash string, state ctrd.State, pid int) {
		sv := &fakeSvc{st: ctrd.ServiceStatus{ID: id, EnvID: strings.Split(id, ".")[0], Name: strings.Split(id, ".")[1], Hash: hash, State: state, PID: pid}, done: make(chan struct{})}
		m.svcs[id] = sv
	}
	left("e_staging.redis", plan.specs["redis"].Hash, ctrd.StateRunning, 42)
	left("e_staging.migrate", plan.specs["migrate"].Hash, ctrd.StateStopped, 0)
	left("e_staging.api", "an older definition", ctrd.StateRunning, 43)
	left("e_staging.gone", "whatever", ctrd.StateRunning, 44)
	left("e_old.web", "whatever", ctrd.StateRunning, 45)
	m.volumes["e_old"], m.volumes["e_staging"] = true, true
	c.setEnvs(env)
	startAgent(t, m, c)

	eventually(t, "redis healthy", func() bool { return c.svc("staging", "redis").Health == api.HealthHealthy })
	eventually(t, "api recreated", func() bool { return m.count(m.creates, "e_staging.api") == 1 })
	eventually(t, "api running", func() bool { return c.svc("staging", "api").State == api.ServiceRunning })
	eventually(t, "the old environment removed", func() bool { _, ok := m.state("e_old.web"); return !ok })
	eventually(t, "a service dropped from the file removed", func() bool { _, ok := m.state("e_staging.gone"); return !ok })
	m.with(func() {
		if m.starts["e_staging.redis"] != 0 || m.svcs["e_staging.redis"].st.PID != 42 {
			t.Errorf("adopted redis restarted: %d starts", m.starts["e_staging.redis"])
		}
		if m.starts["e_staging.migrate"] != 0 {
			t.Errorf("a finished job ran again")
		}
		if m.peersSet["e_staging.redis"] != 1 {
			t.Errorf("adopted redis's Allow not set: %d calls", m.peersSet["e_staging.redis"])
		}
		if !slices.Equal(m.volDels, []string{"e_old"}) {
			t.Errorf("volumes removed: %v, want only e_old's", m.volDels)
		}
	})
	if r := c.svc("staging", "migrate"); r.State != api.ServiceExited || r.ExitCode != 0 {
		t.Errorf("adopted job: %+v, want exited 0", r)
	}
}

func TestServiceSpec(t *testing.T) {
	env := envSpec("staging", api.Running, `
services:
  db:
    image: postgres
    hostname: database
    networks:
      default:
        aliases: [pg]
    secrets: [pw]
  web: {image: web}
secrets:
  pw: {environment: DB_PASSWORD}
`, "db", "web")
	env.Variables = map[string]string{"DB_PASSWORD": "hunter2"}
	plan, err := planEnv(env, "mesh.internal")
	if err != nil {
		t.Fatal(err)
	}
	db := plan.specs["db"]
	if db.ID != "e_staging.db" || db.IPv4 != netip.MustParseAddr("100.90.0.1") || db.IPv6 != netip.MustParseAddr("fd7a:115c:a1e0::9:1") {
		t.Errorf("db: id %s, addresses %v %v", db.ID, db.IPv4, db.IPv6)
	}
	wantHosts := []ctrd.HostEntry{
		{Addr: netip.MustParseAddr("100.90.0.1"), Names: []string{"db", "database", "pg"}},
		{Addr: netip.MustParseAddr("fd7a:115c:a1e0::9:1"), Names: []string{"db", "database", "pg"}},
		{Addr: netip.MustParseAddr("100.90.0.2"), Names: []string{"web"}},
		{Addr: netip.MustParseAddr("fd7a:115c:a1e0::9:2"), Names: []string{"web"}},
	}
	if diff := cmp.Diff(wantHosts, db.Hosts, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("hosts (-want +got):\n%s", diff)
	}
	if !slices.Equal(db.Search, []string{"staging.mesh.internal", "mesh.internal"}) || !slices.Equal(db.DNS, []string{"100.100.100.100"}) {
		t.Errorf("resolver %v search %v", db.DNS, db.Search)
	}
	if len(db.Service.Secrets) != 1 || string(db.Service.Secrets[0].Content) != "hunter2" {
		t.Errorf("secret content not filled from its variable")
	}
	if !slices.Equal(db.Allow, []netip.Prefix{netip.MustParsePrefix("100.64.9.9/32")}) {
		t.Errorf("allow %v", db.Allow)
	}

	rehash := func(f func(e *api.EnvironmentSpec)) string {
		e := env
		e.Variables = map[string]string{"DB_PASSWORD": "hunter2"}
		f(&e)
		p, err := planEnv(e, "mesh.internal")
		if err != nil {
			t.Fatal(err)
		}
		return p.specs["db"].Hash
	}
	if h := rehash(func(e *api.EnvironmentSpec) { e.Allow = []string{"100.64.1.1"} }); h != db.Hash {
		t.Errorf("Allow changed the hash: the service would be recreated")
	}
	if h := rehash(func(e *api.EnvironmentSpec) { e.Variables["DB_PASSWORD"] = "hunter3" }); h == db.Hash {
		t.Errorf("a new secret value left the hash as it was: the service would keep the old one")
	}
	if strings.Contains(db.Hash, "hunter2") || len(db.Hash) != 32 {
		t.Errorf("hash %q", db.Hash)
	}

	env.Variables = nil
	plan, err = planEnv(env, "mesh.internal")
	if err != nil {
		t.Fatal(err)
	}
	if why := plan.bad["db"]; !strings.Contains(why, "DB_PASSWORD") {
		t.Errorf("a secret without its variable: %q, want it named", why)
	}
	if _, ok := plan.specs["web"]; !ok {
		t.Errorf("web cannot run because db's secret has no value")
	}
}

func TestWorkspaceConnectedToEnv(t *testing.T) {
	m, c := newFakeMachine(t.TempDir()), newFakeCoord()
	ws := spec("dev", "img", api.Running)
	ws.Env = "staging"
	c.set(ws)
	startAgent(t, m, c)
	search := func() []string {
		var s []string
		m.with(func() { s = slices.Clone(m.searches["dev"]) })
		return s
	}
	eventually(t, "search set", func() bool { return slices.Equal(search(), []string{"staging.mesh.internal", "mesh.internal"}) })
	ws.Env = "prod"
	c.set(ws)
	eventually(t, "search switched", func() bool { return slices.Equal(search(), []string{"prod.mesh.internal", "mesh.internal"}) })
	ws.Env = ""
	c.set(ws)
	eventually(t, "search back", func() bool { return slices.Equal(search(), []string{"mesh.internal"}) })
	m.fakeRuntime.mu.Lock()
	defer m.fakeRuntime.mu.Unlock()
	if n := m.runs["dev"]; n != 1 {
		t.Errorf("switching environments restarted the workspace: %d runs", n)
	}

	s, err := runtimeSpec(&wsWish{spec: api.WorkspaceSpec{ID: "w_1", Name: "dev", IPv4: "100.64.0.3", Env: "staging"}, domain: "mesh.internal"})
	if err != nil || !slices.Equal(s.Search, []string{"staging.mesh.internal", "mesh.internal"}) {
		t.Errorf("a connected workspace is created with search %v (%v)", s.Search, err)
	}
}

// After a reboot every task is gone: services that are no jobs start again, even with
// restart "no" and a clean exit code.
func TestEnvAdoptionAfterReboot(t *testing.T) {
	m, c := newFakeMachine(t.TempDir()), newFakeCoord()
	env := envSpec("staging", api.Running, orderYAML, "api", "migrate", "redis")
	plan, err := planEnv(env, "mesh.internal")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"api", "migrate", "redis"} {
		sp := plan.specs[s]
		m.svcs[sp.ID] = &fakeSvc{st: ctrd.ServiceStatus{ID: sp.ID, EnvID: sp.EnvID, Name: s, Hash: sp.Hash, State: ctrd.StateStopped}}
	}
	c.setEnvs(env)
	startAgent(t, m, c)
	eventually(t, "api running", func() bool { return c.svc("staging", "api").State == api.ServiceRunning })
	m.with(func() {
		if m.starts["e_staging.redis"] != 1 || m.starts["e_staging.api"] != 1 || m.starts["e_staging.migrate"] != 0 {
			t.Errorf("after a reboot: starts %v, want redis and api once, the finished job not again", m.starts)
		}
	})
}

func TestBoardCutsHealthOutput(t *testing.T) {
	reports := make(chan api.ServiceReport, 4)
	b := newBoard(context.Background(), "staging", reports)
	b.update("redis", func(s *api.ServiceReport) {
		s.State, s.HealthOutput = api.ServiceRunning, strings.Repeat("x", maxHealthOutput-1)+"é and more"
	})
	r := <-reports
	if len(r.HealthOutput) != maxHealthOutput-1 || r.Env != "staging" || r.Name != "redis" {
		t.Errorf("report %q/%q with %d bytes of output, want %d (cut to 1 KiB, whole characters)", r.Env, r.Name, len(r.HealthOutput), maxHealthOutput-1)
	}
	b.update("redis", func(s *api.ServiceReport) {})
	select {
	case r := <-reports:
		t.Errorf("a report without a change: %+v", r)
	default:
	}
}

// advance re-reports every service under the new generation, once: a report of a
// generation is what the machine observed under it.
func TestBoardAdvance(t *testing.T) {
	reports := make(chan api.ServiceReport, 8)
	b := newBoard(context.Background(), "staging", reports)
	b.set("redis", api.ServiceRunning, "")
	b.set("api", api.ServicePending, "")
	<-reports
	<-reports
	b.advance(7)
	got := []api.ServiceReport{<-reports, <-reports}
	want := []api.ServiceReport{{Env: "staging", Name: "api", State: api.ServicePending, Generation: 7},
		{Env: "staging", Name: "redis", State: api.ServiceRunning, Generation: 7}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reports after advance (-want +got):\n%s", diff)
	}
	b.advance(7)
	b.set("api", api.ServiceRunning, "")
	if r := <-reports; r.Name != "api" || r.Generation != 7 {
		t.Errorf("after a second advance to the same generation: %+v, want only api's own change, under 7", r)
	}
}

// Every change of what should run (update, down, up) is reported back under its
// generation, for every service: meshctl's wait knows when the machine has answered it.
func TestEnvReportsGeneration(t *testing.T) {
	m, c := newFakeMachine(t.TempDir()), newFakeCoord()
	spec := envSpec("staging", api.Running, fmt.Sprintf(updateYAML, "api:1"), "api", "redis")
	spec.Generation = 3
	c.setEnvs(spec)
	startAgent(t, m, c)
	reported := func(gen uint64, state string) func() bool {
		return func() bool {
			for _, s := range []string{"api", "redis"} {
				if r := c.svc("staging", s); r.Generation != gen || r.State != state {
					return false
				}
			}
			return true
		}
	}
	eventually(t, "running under 3", reported(3, api.ServiceRunning))
	spec.Compose, spec.Generation = fmt.Sprintf(updateYAML, "api:2"), 5 // api changes, redis does not
	c.setEnvs(spec)
	eventually(t, "running under 5", reported(5, api.ServiceRunning))
	spec.Desired, spec.Generation = api.Stopped, 6
	c.setEnvs(spec)
	eventually(t, "stopped under 6", reported(6, api.ServiceStopped))
	spec.Desired, spec.Generation = api.Running, 8
	c.setEnvs(spec)
	eventually(t, "running under 8", reported(8, api.ServiceRunning))
}

// An image that can be had again is retried, and what waited for its service starts.
func TestEnvRecoversFromAMissingImage(t *testing.T) {
	m, c := newFakeMachine(t.TempDir()), newFakeCoord()
	m.missing["postgres"] = true
	c.setEnvs(envSpec("staging", api.Running, `
services:
  db: {image: postgres}
  web: {image: web, depends_on: [db]}
`, "db", "web"))
	startAgent(t, m, c)
	eventually(t, "web failed", func() bool { return c.svc("staging", "web").State == api.ServiceFailed })
	m.with(func() { m.missing["postgres"] = false })
	eventually(t, "web running", func() bool { return c.svc("staging", "web").State == api.ServiceRunning })
	if r := c.svc("staging", "db"); r.State != api.ServiceRunning || r.Reason != "" {
		t.Errorf("db: %+v, want running with no reason left", r)
	}
}
