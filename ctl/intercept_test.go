package ctl

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshwork.dev/coord/api"
)

// TestInterceptParse: a malformed target, --to or --header is a usage error (exit 2) that
// shows the right shape, before any request; so is --to :PORT outside a workspace.
func TestInterceptParse(t *testing.T) {
	url, calls := noCoord(t)
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"staging/api", "--to", "dev:3000"}, "want ENV/SVC:PORT, as staging/api:8080"},
		{[]string{"staging:8080", "--to", "dev:3000"}, "want ENV/SVC:PORT"},
		{[]string{"staging/api:http", "--to", "dev:3000"}, "want ENV/SVC:PORT"},
		{[]string{"/api:8080", "--to", "dev:3000"}, "want ENV/SVC:PORT"},
		{[]string{"staging/api:70000", "--to", "dev:3000"}, "want ENV/SVC:PORT"},
		{[]string{"staging/api:8080"}, "--to WS:PORT is required"},
		{[]string{"staging/api:8080", "--to", "dev"}, "want WS:PORT, as dev:3000"},
		{[]string{"staging/api:8080", "--to", "dev:0"}, "want WS:PORT"},
		{[]string{"staging/api:8080", "--to", "dev:3000", "--header", "X-Dev"}, "want NAME=VALUE, as X-Dev=alice"},
		{[]string{"staging/api:8080", "--to", "dev:3000", "--header", "=alice"}, "want NAME=VALUE"},
		{[]string{"staging/api:8080", "--to", "dev:3000", "--header", "X-Dev="}, "want NAME=VALUE"},
		{[]string{"staging/api:8080", "--to", ":3000"}, "from outside, name it: --to WS:3000"},
		{[]string{}, "want 1 argument"},
	} {
		out, err := meshctlAt(url, "mk_test", "", append([]string{"intercept", "start"}, c.args...)...)
		var stderr bytes.Buffer
		if code := ExitCode(err, &stderr); code != 2 || !strings.Contains(stderr.String(), c.says) {
			t.Errorf("intercept start %v: exit %d, %s%s; want 2 saying %q", c.args, code, out, stderr.String(), c.says)
		}
	}
	if n := calls(); n != 0 {
		t.Errorf("coord was called %d times by malformed starts", n)
	}
}

// fakeIntercepts is a coord holding one intercept: POST creates it (recording the request),
// GET answers with it, its State moving through states at each GET, DELETE removes it.
type fakeIntercepts struct {
	mu     sync.Mutex
	ic     api.Intercept
	states []string
	gets   int
	posted []api.CreateIntercept
	asked  []string
}

func (f *fakeIntercepts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, r.Method+" "+r.URL.Path)
	switch {
	case r.Method == "POST":
		var req api.CreateIntercept
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &req)
		f.posted = append(f.posted, req)
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(f.ic)
	case r.Method == "GET" && r.URL.Path == "/v1/intercepts":
		json.NewEncoder(w).Encode([]api.Intercept{f.ic})
	case r.Method == "GET" && (r.URL.Path == "/v1/intercepts/"+f.ic.ID || r.URL.Path == "/v1/intercepts/"+f.ic.Name):
		if len(f.states) > 0 {
			f.ic.State = f.states[min(f.gets, len(f.states)-1)]
		}
		f.gets++
		json.NewEncoder(w).Encode(f.ic)
	case r.Method == "DELETE" && r.URL.Path == "/v1/intercepts/"+f.ic.Name:
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]any{"error": api.Error{Code: api.CodeNotFound, Message: "no intercept \"" + strings.TrimPrefix(r.URL.Path, "/v1/intercepts/") + "\""}})
	}
}

func personalIntercept() api.Intercept {
	return api.Intercept{ID: "abcd1234", Name: "alice-api", Env: "staging", Service: "api", Port: 8080, Workspace: "dev",
		WorkspacePort: 3000, Mode: api.InterceptPersonal, Headers: []api.HeaderMatch{{Name: "X-Dev", Value: "alice"}},
		Owner: "alice", State: api.InterceptPending, CreatedAt: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
}

func serve(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestInterceptStartWaits: start sends what it was given, says what it started, and waits
// while the intercept is pending; it ends at active or target-down (saying where traffic
// goes), fails at failed with the machine's reason, and gives up after --timeout naming
// the likely cause.
func TestInterceptStartWaits(t *testing.T) {
	args := []string{"intercept", "start", "staging/api:8080", "--to", "dev:3000", "--header", "X-Dev=alice", "--name", "alice-api", "--timeout", "2s"}
	for _, c := range []struct {
		name   string
		states []string
		says   []string
		err    string
	}{
		{"active", []string{"pending", "pending", "active"}, []string{
			"started intercept alice-api: requests with X-Dev: alice to staging/api:8080 goes to dev:3000 (personal)",
			"active: traffic goes to dev:3000; meshctl intercept stop alice-api sends it back"}, ""},
		{"target down", []string{"pending", "target-down"}, []string{"target-down: dev:3000 does not answer, so traffic still goes to api until it does"}, ""},
		{"failed", []string{"failed"}, nil, "intercept alice-api failed on the service's machine: no reason given"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeIntercepts{ic: personalIntercept(), states: c.states}
			out, err := meshctlAt(serve(t, f), "mk_test", "", args...)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, want := range c.says {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			want := []api.CreateIntercept{{Name: "alice-api", Env: "staging", Service: "api", Port: 8080, Workspace: "dev", WorkspacePort: 3000,
				Headers: []api.HeaderMatch{{Name: "X-Dev", Value: "alice"}}}}
			if diff := cmp.Diff(want, f.posted); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
			if f.gets != len(c.states) {
				t.Errorf("%d GETs; want %d (one per state until applied)", f.gets, len(c.states))
			}
		})
	}
	f := &fakeIntercepts{ic: personalIntercept(), states: []string{"pending"}}
	args[len(args)-1] = "300ms"
	if _, err := meshctlAt(serve(t, f), "mk_test", "", args...); err == nil || !strings.Contains(err.Error(), "intercept alice-api is still pending after 300ms") || !strings.Contains(err.Error(), "is its agent running?") {
		t.Errorf("a start never applied: %v", err)
	}
	f = &fakeIntercepts{ic: personalIntercept()}
	out, err := meshctlAt(serve(t, f), "mk_test", "", "intercept", "start", "staging/api:8080", "--to", "dev:3000", "--wait=false")
	if err != nil || f.gets != 0 || !strings.Contains(out, "meshctl intercept status alice-api") {
		t.Errorf("--wait=false: %v, %d GETs\n%s", err, f.gets, out)
	}
}

// TestInterceptListStatusStop: list prints a row per intercept with every column, --json the
// API's objects; status says mode, target, whether the workspace answers, counts and since
// when; stop says traffic goes back; an unknown one is named with where to look.
func TestInterceptListStatusStop(t *testing.T) {
	ic := personalIntercept()
	ic.State, ic.Connections, ic.Requests, ic.StateAt = api.InterceptTargetDown, 4, 17, time.Date(2026, 12, 7, 10, 5, 0, 0, time.UTC)
	ic.Reason = "connection refused"
	url := serve(t, &fakeIntercepts{ic: ic})
	out, err := meshctlAt(url, "mk_test", "", "intercept", "list")
	if err != nil {
		t.Fatal(err)
	}
	if !regexpMatch(`ID\s+NAME\s+MODE\s+TARGET\s+TO\s+HEADERS\s+STATE\s+CONNS\s+REQS\s+OWNER`, out) ||
		!regexpMatch(`abcd1234\s+alice-api\s+personal\s+staging/api:8080\s+dev:3000\s+X-Dev=alice\s+target-down\s+4\s+17\s+alice`, out) {
		t.Errorf("intercept list:\n%s", out)
	}
	var list []api.Intercept
	out, _ = meshctlAt(url, "mk_test", "", "intercept", "list", "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || !cmp.Equal(list[0], ic) {
		t.Errorf("intercept list --json: %v\n%s", err, out)
	}
	out, err = meshctlAt(url, "mk_test", "", "intercept", "status", "alice-api")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"intercept alice-api (ID abcd1234), owner alice",
		"mode:     personal: requests with X-Dev: alice",
		"target:   staging/api:8080 → dev:3000",
		"state:    target-down: dev:3000 does not answer; traffic goes to api until it does: connection refused since " + when(&ic.StateAt),
		"diverted: 4 connection(s), 17 request(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("intercept status lacks %q:\n%s", want, out)
		}
	}
	out, err = meshctlAt(url, "mk_test", "", "intercept", "stop", "alice-api")
	if err != nil || !strings.Contains(out, "stopped intercept alice-api: new connections and requests go to the service again") {
		t.Errorf("intercept stop: %v\n%s", err, out)
	}
	for _, verb := range []string{"status", "stop"} {
		if _, err := meshctlAt(url, "mk_test", "", "intercept", verb, "nope"); err == nil || !strings.Contains(err.Error(), `no intercept "nope"`) || !strings.Contains(err.Error(), "meshctl intercept list") {
			t.Errorf("intercept %s nope: %v", verb, err)
		}
	}
}

// TestInterceptInWorkspace: inside a workspace (its API socket answers, no --coord or
// --token), --to :PORT sends no workspace, which the workspace's API fills in.
func TestInterceptInWorkspace(t *testing.T) {
	f := &fakeIntercepts{ic: personalIntercept(), states: []string{"active"}}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	old := workspaceSocket
	workspaceSocket = sock
	t.Cleanup(func() { workspaceSocket = old })
	t.Setenv("MESHCTL_COORD", "")
	t.Setenv("MESHCTL_TOKEN", "")
	var out bytes.Buffer
	err = Run(t.Context(), []string{"intercept", "start", "staging/api:8080", "--to", ":3000", "--header", "X-Dev=alice"}, strings.NewReader(""), &out, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(f.posted) != 1 || f.posted[0].Workspace != "" || f.posted[0].WorkspacePort != 3000 {
		t.Errorf("sent %+v; want no workspace, port 3000", f.posted)
	}
}
