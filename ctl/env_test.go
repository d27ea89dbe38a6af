package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"tailscale.com/tsnet"

	"meshwork.dev/coord"
	"meshwork.dev/coord/api"
)

// testCompose is a small environment: a Redis with a healthcheck and an API that needs it.
const testCompose = `services:
  redis:
    image: docker.io/library/redis:7
    expose: ["6379"]
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
  api:
    image: example.com/api:1
    ports: ["8080:8080"]
    depends_on:
      redis: {condition: service_healthy}
`

// envCoord is a one-replica coord (with a secret key, so environments can be created) and a
// workmachine wm1 joined to it through the control protocol (tsnet, in this process).
type envCoord struct {
	url, admin string
	state      string // its state directory
}

func startEnvCoord(t *testing.T) *envCoord {
	t.Helper()
	c := startCoord(t)
	c.joinWorkmachine(t, "wm1")
	return c
}

// startCoord is a one-replica coord with a secret key, and no machine.
func startCoord(t *testing.T) *envCoord {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "secret.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	httpAddr, clusterAddr := freeTCP(t), freeUDP(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- coord.Run(ctx, coord.Config{ID: "c1", StateDir: state, HTTPAddr: httpAddr, ClusterAddr: clusterAddr,
			SecretKeyFile: keyFile, Logf: t.Logf})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	c := &envCoord{url: "http://" + httpAddr, state: state}
	for deadline := time.Now().Add(20 * time.Second); c.admin == ""; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(state, "admin.key"))
		c.admin = strings.TrimSpace(string(b))
		if time.Now().After(deadline) {
			t.Fatal("coord did not write admin.key")
		}
	}
	return c
}

func freeTCP(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freeUDP(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// joinWorkmachine joins a tsnet node tagged tag:workmachine (no agent runs on it: services
// and workspaces stay without an observed state).
func (c *envCoord) joinWorkmachine(t *testing.T, name string) {
	t.Helper()
	var key api.NewAuthKey
	client := &api.Client{Base: c.url, Token: c.admin}
	if err := client.Do(context.Background(), "POST", "/v1/authkeys", api.CreateAuthKey{Tags: []string{"tag:workmachine"}}, &key); err != nil {
		t.Fatal(err)
	}
	s := &tsnet.Server{Dir: filepath.Join(t.TempDir(), name), Hostname: name, ControlURL: c.url, AuthKey: key.Key,
		Logf: func(string, ...any) {}, UserLogf: t.Logf}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := s.Up(ctx); err != nil {
		t.Fatalf("%s up: %v", name, err)
	}
}

// meshctl runs meshctl against coord url as the admin, with stdin; it returns stdout and
// stderr together.
func meshctlAt(url, token, stdin string, args ...string) (string, error) {
	var out bytes.Buffer
	args = append([]string{"--coord", url, "--token", token}, args...)
	err := Run(context.Background(), args, strings.NewReader(stdin), &out, &out)
	return out.String(), err
}

func (c *envCoord) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := meshctlAt(c.url, c.admin, testCompose, args...)
	if err != nil {
		t.Fatalf("meshctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *envCoord) runJSON(t *testing.T, out any, args ...string) {
	t.Helper()
	if err := json.Unmarshal([]byte(c.run(t, append(args, "--json")...)), out); err != nil {
		t.Fatalf("meshctl %s --json: %v", strings.Join(args, " "), err)
	}
}

func writeCompose(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "compose.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEnvCommands drives an environment's life through meshctl against coord: create, list,
// status, down, up, a refused second create, connect and disconnect of a workspace (shown by
// ws list), delete.
func TestEnvCommands(t *testing.T) {
	c := startEnvCoord(t)
	file := writeCompose(t, testCompose)

	var created api.Environment
	c.runJSON(t, &created, "env", "create", "staging", "-f", file, "--machine", "wm1", "--wait=false")
	if created.Name != "staging" || created.Machine != "wm1" || created.Desired != api.Running || serviceNames(created) != "api, redis" {
		t.Errorf("env create --json: %+v", created)
	}
	var list []api.Environment
	c.runJSON(t, &list, "env", "list")
	if len(list) != 1 || list[0].Name != "staging" || list[0].Owner != "admin" {
		t.Errorf("env list --json: %+v", list)
	}
	out := c.run(t, "env", "list")
	for _, want := range []string{"NAME", "READY", "staging", "admin", "wm1", "running", "api, redis", "0/2"} {
		if !strings.Contains(out, want) {
			t.Errorf("env list lacks %q:\n%s", want, out)
		}
	}
	var st api.Environment
	c.runJSON(t, &st, "env", "status", "staging")
	if diff := cmp.Diff(created.Services, st.Services); diff != "" {
		t.Errorf("env status --json services differ from create's (-create +status):\n%s", diff)
	}
	out = c.run(t, "env", "status", "staging")
	for _, want := range []string{"SERVICE", "HEALTH", "RESTARTS", "redis", "6379", "8080", "0/2 ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("env status lacks %q:\n%s", want, out)
		}
	}

	// No agent runs on wm1: a wait says what it waited for, and where to look.
	out, err := meshctlAt(c.url, c.admin, "", "env", "up", "staging", "--timeout", "300ms")
	if want := "environment staging is not ready after 300ms: api waiting for its machine, redis waiting for its machine; meshctl env status staging shows more (is wm1's agent running? meshctl node list)"; err == nil || err.Error() != want {
		t.Errorf("env up with no agent: %v, want %q\n%s", err, want, out)
	}
	if want := "  api: waiting for its machine\n  redis: waiting for its machine\n"; out != want {
		t.Errorf("env up with no agent printed %q, want %q", out, want)
	}

	var down, up api.Environment
	c.runJSON(t, &down, "env", "down", "staging", "--wait=false")
	c.runJSON(t, &up, "env", "up", "staging", "--wait=false")
	if down.Desired != api.Stopped || up.Desired != api.Running {
		t.Errorf("env down/up: desired %q then %q", down.Desired, up.Desired)
	}
	if out, err := meshctlAt(c.url, c.admin, "", "env", "create", "staging", "-f", file, "--machine", "wm1"); err == nil || !strings.Contains(out+err.Error(), "already exists") {
		t.Errorf("a second env create staging: %v\n%s", err, out)
	}

	c.run(t, "ws", "create", "api", "--machine", "wm1", "--image", "example.com/dev:1", "--wait=false")
	out = c.run(t, "env", "connect", "api", "staging")
	if want := "workspace api now resolves api, redis of staging"; !strings.Contains(out, want) {
		t.Errorf("env connect said %q, want %q", out, want)
	}
	c.checkWsEnv(t, "api", "staging")
	c.run(t, "env", "create", "qa", "-f", "-", "--machine", "wm1", "--wait=false")
	out = c.run(t, "env", "connect", "api", "qa")
	if want := "workspace api now resolves api, redis of qa instead of those of staging"; !strings.Contains(out, want) {
		t.Errorf("switching environments said %q, want %q", out, want)
	}
	c.checkWsEnv(t, "api", "qa")
	c.run(t, "env", "connect", "api", "staging")
	out = c.run(t, "env", "disconnect", "api")
	if want := "workspace api no longer resolves api, redis of staging"; !strings.Contains(out, want) {
		t.Errorf("env disconnect said %q, want %q", out, want)
	}
	c.checkWsEnv(t, "api", "")
	if out := c.run(t, "env", "disconnect", "api"); !strings.Contains(out, "not connected") {
		t.Errorf("a second disconnect said %q", out)
	}
	if out, err := meshctlAt(c.url, c.admin, "", "env", "connect", "api", "nope"); err == nil || !strings.Contains(err.Error(), `no environment "nope"`) {
		t.Errorf("connect to an environment that is not: %v\n%s", err, out)
	}

	for _, args := range [][]string{{"env", "status", "nope"}, {"env", "logs", "nope"}, {"env", "up", "nope"}, {"env", "delete", "nope"}} {
		if out, err := meshctlAt(c.url, c.admin, "", args...); err == nil || !strings.Contains(err.Error(), `no environment "nope"`) || !strings.Contains(err.Error(), "meshctl env list") {
			t.Errorf("meshctl %v: %v\n%s", args, err, out)
		}
	}
	if out, err := meshctlAt(c.url, c.admin, "", "env", "connect", "nope", "staging"); err == nil || !strings.Contains(err.Error(), "meshctl ws list") {
		t.Errorf("connect a workspace that is not: %v\n%s", err, out)
	}

	c.run(t, "env", "delete", "staging")
	c.run(t, "env", "delete", "qa")
	if out := c.run(t, "env", "list"); !strings.Contains(out, "no environments yet") {
		t.Errorf("env list after delete:\n%s", out)
	}
}

// checkWsEnv checks that ws list shows workspace ws connected to env ("": none), in its
// table and in --json.
func (c *envCoord) checkWsEnv(t *testing.T, ws, env string) {
	t.Helper()
	var list []api.Workspace
	c.runJSON(t, &list, "ws", "list")
	if len(list) != 1 || list[0].Name != ws || list[0].Env != env {
		t.Errorf("ws list --json: %+v, want %s connected to %q", list, ws, env)
	}
	out := c.run(t, "ws", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "ENV") {
		t.Fatalf("ws list:\n%s", out)
	}
	col := strings.Index(lines[0], "ENV")
	want := env
	if want == "" {
		want = "-"
	}
	if got := strings.Fields(lines[1][col:])[0]; got != want {
		t.Errorf("ws list ENV column = %q, want %q:\n%s", got, want, out)
	}
}

// noCoord is a coord that must not be called: it records that it was.
func noCoord(t *testing.T) (string, func() int) {
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		http.Error(w, "no", http.StatusTeapot)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// TestEnvCreateRefusesLocally: a broken compose file, a refused key and a secret whose
// variable is unset fail before any request, naming the problem; a missing -f is a usage error.
func TestEnvCreateRefusesLocally(t *testing.T) {
	url, calls := noCoord(t)
	t.Setenv("DB_PASS_UNSET_FOR_TEST", "")
	os.Unsetenv("DB_PASS_UNSET_FOR_TEST")
	for _, tc := range []struct {
		name, compose string
		want          []string
	}{
		{"broken yaml", "services:\n  web:\n    image: [nginx\n", []string{`environment "staging": compose file line 3: not valid YAML`}},
		{"build", "services:\n  web:\n    build: .\n", []string{`compose file line 3: service "web": build:`, "image:"}},
		{"privileged", "services:\n  web:\n    image: nginx\n    privileged: true\n", []string{`compose file line 4: service "web": privileged:`}},
		{"too large", "services:\n  web:\n    image: nginx\n#" + strings.Repeat("x", 300<<10) + "\n", []string{"at most 256 KiB"}},
		{"unset secret variable", "services:\n  db:\n    image: postgres\n    secrets: [db_pass]\nsecrets:\n  db_pass:\n    environment: DB_PASS_UNSET_FOR_TEST\n",
			[]string{`service "db"`, `secret "db_pass"`, "DB_PASS_UNSET_FOR_TEST", "export DB_PASS_UNSET_FOR_TEST="}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, args := range [][]string{
				{"env", "create", "staging", "-f", writeCompose(t, tc.compose), "--machine", "wm1"},
				{"env", "create", "staging", "-f", "-", "--machine", "wm1"},
				{"env", "update", "staging", "-f", "-"},
			} {
				out, err := meshctlAt(url, "mk_test", tc.compose, args...)
				if err == nil {
					t.Fatalf("%v: no error\n%s", args, out)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%v: error %q lacks %q", args, err, w)
					}
				}
			}
		})
	}
	out, err := meshctlAt(url, "mk_test", "", "env", "create", "staging", "--machine", "wm1")
	var stderr bytes.Buffer
	if code := ExitCode(err, &stderr); code != 2 || !strings.Contains(stderr.String(), "-f compose.yaml") {
		t.Errorf("env create without -f: exit %d, %s%s", code, out, stderr.String())
	}
	if n := calls(); n != 0 {
		t.Errorf("coord was called %d times; every refusal must come before any request", n)
	}
}

// TestEnvCreateSendsVariables: a secret's variable is read from meshctl's environment and
// sent with the create, which coord accepts; the compose file's own secrets stay in it.
func TestEnvCreateSendsVariables(t *testing.T) {
	c := startEnvCoord(t)
	target, _ := url.Parse(c.url)
	var mu sync.Mutex
	var sent []api.CreateEnvironment
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" && r.URL.Path == "/v1/environments" {
			b, _ := io.ReadAll(r.Body)
			var req api.CreateEnvironment
			json.Unmarshal(b, &req)
			mu.Lock()
			sent = append(sent, req)
			mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		proxy.ServeHTTP(w, r)
	}))
	defer srv.Close()
	t.Setenv("DB_PASS", "hunter2-only-here")
	compose := "services:\n  db:\n    image: postgres\n    secrets: [db_pass]\n    configs: [motd]\nsecrets:\n  db_pass:\n    environment: DB_PASS\nconfigs:\n  motd:\n    content: hello\n"
	out, err := meshctlAt(srv.URL, c.admin, "", "env", "create", "qa", "-f", writeCompose(t, compose), "--machine", "wm1", "--wait=false")
	if err != nil {
		t.Fatalf("env create: %v\n%s", err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 1 {
		t.Fatalf("%d create requests", len(sent))
	}
	if diff := cmp.Diff(map[string]string{"DB_PASS": "hunter2-only-here"}, sent[0].Variables); diff != "" {
		t.Errorf("variables sent (-want +got):\n%s", diff)
	}
	if sent[0].Compose != compose {
		t.Errorf("compose sent: %q", sent[0].Compose)
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("meshctl printed the secret:\n%s", out)
	}
	if out := c.run(t, "env", "list"); !strings.Contains(out, "qa") {
		t.Errorf("coord did not keep the environment:\n%s", out)
	}
}

// states is a fake coord answering GET of an environment with one state after another (the
// last one again once they are used up).
type states struct {
	mu   sync.Mutex
	seq  []api.Environment
	next int
}

func (s *states) get(context.Context) (api.Environment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.seq[min(s.next, len(s.seq)-1)]
	s.next++
	return e, nil
}

func envOf(services ...api.Service) api.Environment {
	return api.Environment{Name: "staging", Machine: "wm1", Services: services}
}

func svc(name, state, health string) api.Service {
	return api.Service{Name: name, State: state, Health: health, DNSName: name + ".staging.mesh.internal", IPv4: "100.64.0.9", Ports: []int{6379}}
}

// TestEnvWait: the wait prints each service's progress once per change, ends when every
// service is ready (a job that exited 0 is), fails naming a failed service or a job that
// exited with an error, and at its timeout names what is missing.
func TestEnvWait(t *testing.T) {
	job := func(code int) api.Service {
		s := svc("migrate", api.ServiceExited, "")
		s.ExitCode = code
		return s
	}
	pull := svc("redis", api.ServicePulling, "")
	pull.Reason = "12 MB of 30 MB"
	tests := []struct {
		name    string
		up      bool
		seq     []api.Environment
		want    string // printed
		wantErr string
	}{
		{"up", true, []api.Environment{
			envOf(svc("migrate", "", ""), svc("redis", api.ServicePending, "")),
			envOf(svc("migrate", "", ""), pull),
			envOf(svc("migrate", "", ""), pull),
			envOf(svc("migrate", api.ServiceStarting, ""), svc("redis", api.ServiceStarting, "")),
			envOf(svc("migrate", api.ServiceRunning, ""), svc("redis", api.ServiceRunning, api.HealthStarting)),
			envOf(svc("migrate", api.ServiceRunning, ""), svc("redis", api.ServiceRunning, api.HealthStarting)),
			envOf(job(0), svc("redis", api.ServiceRunning, api.HealthHealthy)),
		}, `  migrate: waiting for its machine
  redis: pending
  redis: pulling (12 MB of 30 MB)
  migrate: starting
  redis: starting
  migrate: running
  redis: running, health starting
  migrate: exited 0
  redis: healthy
environment staging is ready on wm1:
  migrate  migrate.staging.mesh.internal  100.64.0.9  6379
  redis    redis.staging.mesh.internal    100.64.0.9  6379
connect a workspace to reach them by bare name (migrate:6379): meshctl env connect WS staging
`, ""},
		{"failed", true, []api.Environment{
			envOf(svc("redis", api.ServicePulling, "")),
			envOf(api.Service{Name: "redis", State: api.ServiceFailed, Reason: "image not found: docker.io/library/redis:99"}),
		}, "  redis: pulling\n", "environment staging: service redis failed: image not found: docker.io/library/redis:99; see meshctl env status staging and meshctl env logs staging redis"},
		{"job failed", true, []api.Environment{envOf(svc("redis", api.ServiceRunning, ""), job(3))},
			"  redis: running\n  migrate: exited 3\n", "service migrate exited with code 3; see meshctl env status staging and meshctl env logs staging migrate"},
		{"down", false, []api.Environment{
			envOf(svc("redis", api.ServiceRunning, ""), job(0)),
			envOf(svc("redis", api.ServiceStopped, ""), job(0)),
		}, "  redis: running\n  migrate: exited 0\n  redis: stopped\nenvironment staging is down: containers stopped, volumes and addresses kept (meshctl env up staging brings it back)\n", ""},
		{"timeout", true, []api.Environment{envOf(svc("redis", api.ServiceRunning, api.HealthStarting))},
			"  redis: running, health starting\n", "environment staging is not ready after 300ms: redis running, health starting; meshctl env status staging shows more (is wm1's agent running? meshctl node list)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			e := &env{stdout: &out, stderr: &out}
			w := &envWait{name: "staging", up: tc.up, timeout: 300 * time.Millisecond, get: (&states{seq: tc.seq}).get, every: time.Millisecond}
			if tc.name != "timeout" {
				w.timeout = 10 * time.Second
			}
			err := e.waitEnvironment(context.Background(), w)
			if diff := cmp.Diff(tc.want, out.String()); diff != "" {
				t.Errorf("printed (-want +got):\n%s", diff)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestEnvWaitUpdate: after an update (or up, down), a service's state observed under an
// older generation does not count: not its old ready state, nor an old failure (the update
// may mend it); only what its machine observed under the update's generation does.
func TestEnvWaitUpdate(t *testing.T) {
	gen := func(s api.Service, g uint64) api.Service { s.Generation = g; return s }
	old := gen(svc("redis", api.ServiceRunning, ""), 7)
	broken := api.Service{Name: "api", State: api.ServiceFailed, Reason: "exec: no such file", Generation: 7}
	at9 := func(services ...api.Service) api.Environment { e := envOf(services...); e.Generation = 9; return e }
	seq := &states{seq: []api.Environment{
		envOf(broken, old), // a replica behind the update: the wait knows better
		at9(broken, old),
		at9(gen(svc("api", api.ServiceRunning, ""), 9), gen(svc("redis", api.ServicePending, ""), 9)),
		at9(gen(svc("api", api.ServiceRunning, ""), 9), gen(svc("redis", api.ServiceRunning, api.HealthStarting), 9)),
		at9(gen(svc("api", api.ServiceRunning, ""), 9), gen(svc("redis", api.ServiceRunning, ""), 9)),
	}}
	var out bytes.Buffer
	e := &env{stdout: &out, stderr: &out}
	w := &envWait{name: "staging", up: true, timeout: 10 * time.Second, gen: 9, get: seq.get, every: time.Millisecond}
	if err := e.waitEnvironment(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	if seq.next != 5 {
		t.Errorf("the wait ended after %d reads, want 5 (the old ready state must not count, nor the old failure)", seq.next)
	}
	want := "  api: changing\n  redis: changing\n  api: running\n  redis: pending\n  redis: running, health starting\n  redis: running\n"
	if !strings.HasPrefix(out.String(), want) {
		t.Errorf("printed %q, want it to start with %q", out.String(), want)
	}

	// A down ends only once every service was observed stopped under its generation.
	seq = &states{seq: []api.Environment{at9(gen(svc("api", api.ServiceStopped, ""), 7)), at9(gen(svc("api", api.ServiceStopped, ""), 9))}}
	w = &envWait{name: "staging", timeout: 10 * time.Second, gen: 9, get: seq.get, every: time.Millisecond}
	if err := e.waitEnvironment(context.Background(), w); err != nil || seq.next != 2 {
		t.Errorf("down: %v after %d reads, want success after 2", err, seq.next)
	}
}

// TestEnvLogs: env logs reads a service's log from its machine's API over the local daemon;
// without a service, every service's, each line prefixed with its name.
func TestEnvLogs(t *testing.T) {
	logs := map[string]string{"redis": "Ready to accept connections\nsecond line", "api": "listening on :8080\n"}
	var mu sync.Mutex
	var asked []string
	machine := http.NewServeMux()
	machine.HandleFunc("GET /v1/environments/{env}/services/{svc}/logs", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Host+" "+r.URL.RequestURI())
		mu.Unlock()
		io.WriteString(w, logs[r.PathValue("svc")])
	})
	sock := fakeDaemon(t, machine)
	coordSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(envOf(api.Service{Name: "api"}, api.Service{Name: "redis"}))
	}))
	defer coordSrv.Close()

	out, err := meshctlAt(coordSrv.URL, "mk_test", "", "env", "logs", "staging", "redis", "--tail", "5", "--socket", sock)
	if err != nil || out != logs["redis"] {
		t.Errorf("env logs staging redis: %v %q", err, out)
	}
	for _, follow := range []string{"--follow=false", "--follow"} {
		out, err = meshctlAt(coordSrv.URL, "mk_test", "", "env", "logs", "staging", follow, "--socket", sock)
		if err != nil {
			t.Fatalf("env logs staging %s: %v\n%s", follow, err, out)
		}
		got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		want := []string{"api   | listening on :8080", "redis | Ready to accept connections", "redis | second line"}
		if follow == "--follow" { // read concurrently: each stream's lines in order, whole
			got = sortedStable(got)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("env logs staging %s (-want +got):\n%s", follow, diff)
		}
	}
	mu.Lock()
	if want := "wm1 /v1/environments/staging/services/redis/logs?tail=5"; len(asked) == 0 || asked[0] != want {
		t.Errorf("machine asked %q, want first %q", asked, want)
	}
	if last := asked[len(asked)-1]; !strings.Contains(last, "follow=1") {
		t.Errorf("--follow asked %q", last)
	}
	mu.Unlock()
	if out, err := meshctlAt(coordSrv.URL, "mk_test", "", "env", "logs", "staging", "nope", "--socket", sock); err == nil || !strings.Contains(err.Error(), `no service "nope"; its services: api, redis`) {
		t.Errorf("env logs of an unknown service: %v\n%s", err, out)
	}
}

// sortedStable sorts lines by their prefix (the service), keeping each service's order.
func sortedStable(lines []string) []string {
	by := map[string][]string{}
	var keys []string
	for _, l := range lines {
		k, _, _ := strings.Cut(l, "|")
		if by[k] == nil {
			keys = append(keys, k)
		}
		by[k] = append(by[k], l)
	}
	var out []string
	for _, k := range []string{"api   ", "redis "} {
		out = append(out, by[k]...)
	}
	if len(keys) != 2 {
		return lines
	}
	return out
}

// fakeDaemon serves the laptop daemon's /dial on a unix socket, connecting every dial to
// machine (whatever address it names).
func fakeDaemon(t *testing.T, machine http.Handler) string {
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn)
	srv := &http.Server{Handler: machine}
	go srv.Serve(&chanListener{conns: conns, addr: ln.Addr(), done: make(chan struct{})})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || req.URL.Path != "/dial" {
					c.Close()
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
				conns <- c
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); srv.Close() })
	return sock
}

type chanListener struct {
	conns chan net.Conn
	addr  net.Addr
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// fakeCoord answers GET /v1/environments/staging with env, and records the body of any
// other request (answering it with env too).
func fakeCoord(t *testing.T, env api.Environment) (string, func() []string) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "GET" {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			got = append(got, r.Method+" "+r.URL.Path+" "+string(b))
			mu.Unlock()
		}
		json.NewEncoder(w).Encode(env)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []string { mu.Lock(); defer mu.Unlock(); return got }
}

// TestEnvStatus: env status prints a row per service and, below the table, the last health
// output of the services that are unhealthy.
func TestEnvStatus(t *testing.T) {
	redis := svc("redis", api.ServiceRunning, api.HealthUnhealthy)
	redis.HealthOutput = "Could not connect to Redis at 127.0.0.1:6379: Connection refused"
	redis.Restarts = 2
	job := svc("migrate", api.ServiceExited, "")
	job.ExitCode = 1
	job.Reason = "exited with code 1"
	e := envOf(job, redis)
	e.Owner, e.Desired = "alice", api.Running
	url, _ := fakeCoord(t, e)
	out, err := meshctlAt(url, "mk_test", "", "env", "status", "staging")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"environment staging on wm1, owner alice: desired running, 0/2 ready",
		"services are reached as <service>.staging.mesh.internal",
		"exit 1: exited with code 1",
		"redis is unhealthy; its last health check said:\n    Could not connect to Redis",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("env status lacks %q:\n%s", want, out)
		}
	}
	if !regexpMatch(`redis\s+running\s+unhealthy\s+100\.64\.0\.9\s+6379\s+2\s`, out) {
		t.Errorf("env status has no row for redis:\n%s", out)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// TestEnvUpdate: env update checks the file, then PUTs it with its variables.
func TestEnvUpdate(t *testing.T) {
	url, got := fakeCoord(t, envOf(svc("db", api.ServiceRunning, "")))
	t.Setenv("DB_PASS", "pw-2")
	compose := "services:\n  db:\n    image: postgres:16\n    secrets: [db_pass]\nsecrets:\n  db_pass:\n    environment: DB_PASS\n"
	out, err := meshctlAt(url, "mk_test", compose, "env", "update", "staging", "-f", "-", "--wait=false")
	if err != nil {
		t.Fatalf("env update: %v\n%s", err, out)
	}
	want, _ := json.Marshal(api.UpdateEnvironment{Compose: compose, Variables: map[string]string{"DB_PASS": "pw-2"}})
	if diff := cmp.Diff([]string{"PUT /v1/environments/staging " + string(want)}, got()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}
