package adminapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
)

func interceptBody(env, svc string, port int, ws string, headers ...string) string {
	var hs []api.HeaderMatch
	for i := 0; i+1 < len(headers); i += 2 {
		hs = append(hs, api.HeaderMatch{Name: headers[i], Value: headers[i+1]})
	}
	b, _ := json.Marshal(api.CreateIntercept{Env: env, Service: svc, Port: port, Workspace: ws, WorkspacePort: 3000, Headers: hs})
	return string(b)
}

// TestInterceptRefusals: each bad or unauthorised start is a clear 4xx and changes nothing.
// A member may not intercept an environment she has no rights on, nor send traffic to
// another member's workspace, even on her own environment.
func TestInterceptRefusals(t *testing.T) {
	e := newEnv(t)
	if status, body := e.do(e.alice, "POST", "/v1/intercepts", interceptBody("alice-env", "api", 8080, "alice-ws", "X-Dev", "alice")); status != 201 {
		t.Fatalf("alice's own intercept: %d %s", status, body)
	}
	many := []string{}
	for i := range 9 {
		many = append(many, fmt.Sprintf("X-H%d", i), "v")
	}
	tests := []struct {
		name, key, body string
		status          int
		says            string
	}{
		{"bob intercepts alice's env", e.bob, interceptBody("alice-env", "api", 8080, "bob-ws", "X-Dev", "bob"), 403, `environment "alice-env" is not yours`},
		{"alice into bob's workspace", e.alice, interceptBody("alice-env", "api", 8080, "bob-ws", "X-Dev", "a2"), 404, `no workspace "bob-ws" of yours`},
		{"unknown env", e.alice, interceptBody("nope", "api", 8080, "alice-ws"), 404, `no environment "nope"`},
		{"unknown service", e.alice, interceptBody("alice-env", "web", 8080, "alice-ws"), 404, `has no service "web" (it has api)`},
		{"port not exposed", e.alice, interceptBody("alice-env", "api", 9999, "alice-ws"), 400, "does not expose port 9999 (it exposes 8080)"},
		{"port out of range", e.alice, interceptBody("alice-env", "api", 0, "alice-ws"), 400, "port 0"},
		{"header name not a token", e.alice, interceptBody("alice-env", "api", 8080, "alice-ws", "X Dev", "a"), 400, `header name "X Dev"`},
		{"header value not printable", e.alice, interceptBody("alice-env", "api", 8080, "alice-ws", "X-Dev", "a\x01"), 400, "printable"},
		{"too many headers", e.alice, interceptBody("alice-env", "api", 8080, "alice-ws", many...), 400, "at most 8"},
		{"no workspace", e.alice, interceptBody("alice-env", "api", 8080, ""), 400, "--to WS:PORT"},
		{"same headers again", e.alice, interceptBody("alice-env", "api", 8080, "alice-ws", "x-dev", "alice"), 409, "meshctl intercept stop"},
		{"global beside a personal", e.alice, interceptBody("alice-env", "api", 8080, "alice-ws"), 409, "cannot share a port"},
		{"bad name", e.alice, `{"name": "Bad_Name", "env": "alice-env", "service": "api", "port": 8080, "workspace": "alice-ws", "workspace_port": 1, "headers": [{"name": "X-A", "value": "1"}]}`, 400, "intercept name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.snapshot()
			status, body := e.do(tt.key, "POST", "/v1/intercepts", tt.body)
			var eb struct{ Error api.Error }
			if status != tt.status || json.Unmarshal([]byte(body), &eb) != nil || !strings.Contains(eb.Error.Message, tt.says) {
				t.Errorf("%d %s; want %d with a message about %q", status, body, tt.status, tt.says)
			}
			if e.snapshot() != before {
				t.Errorf("a refused request changed the state")
			}
		})
	}
}

// TestInterceptVisibility: an intercept is seen, by ID or name, and stopped by admins, its
// owner, the owner of its workspace and the owner of its environment, and by no one else;
// start and stop are audited; the observed state shows in answers.
func TestInterceptVisibility(t *testing.T) {
	e := newEnv(t)
	body := `{"name": "bobs", "env": "alice-env", "service": "api", "port": 8080, "workspace": "bob-ws", "workspace_port": 3000, "headers": [{"name": "x-dev", "value": "bob"}]}`
	status, out := e.do(e.admin, "POST", "/v1/intercepts", body)
	var ic api.Intercept
	if status != 201 || json.Unmarshal([]byte(out), &ic) != nil {
		t.Fatalf("admin starts an intercept into bob's workspace: %d %s", status, out)
	}
	if ic.Mode != api.InterceptPersonal || ic.Headers[0].Name != "X-Dev" || ic.State != api.InterceptPending || ic.Owner != "root" {
		t.Errorf("answer %+v; want personal, X-Dev, pending, owner root", ic)
	}
	if status, out := e.do(e.alice, "POST", "/v1/intercepts", interceptBody("alice-env", "api", 8080, "alice-ws", "X-Dev", "alice")); status != 201 {
		t.Fatalf("alice: %d %s", status, out)
	}
	e.register("carol-laptop", "u-root")
	count := func(key string) int {
		_, out := e.do(key, "GET", "/v1/intercepts", "")
		var l []api.Intercept
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatal(out)
		}
		return len(l)
	}
	if a, b, r := count(e.alice), count(e.bob), count(e.admin); a != 2 || b != 1 || r != 2 {
		t.Errorf("listings: alice %d (env owner: both), bob %d (his workspace's), admin %d; want 2, 1, 2", a, b, r)
	}
	// Bob sees the one into his workspace, not alice's own.
	var aliceID string
	for _, x := range e.b.f.Store().Intercepts("u-alice") {
		aliceID = x.ID
	}
	if status, _ := e.do(e.bob, "GET", "/v1/intercepts/"+aliceID, ""); status != 404 {
		t.Errorf("bob reads alice's intercept: %d, want 404", status)
	}
	if status, _ := e.do(e.bob, "DELETE", "/v1/intercepts/"+aliceID, ""); status != 404 || e.b.f.Store().Intercept(aliceID) == nil {
		t.Errorf("bob stops alice's intercept: %d, want 404 and it still there", status)
	}
	apply(t, e, "intercept.status", fsm.InterceptStatus{Machine: "wm1", Intercepts: []fsm.InterceptObserved{{ID: ic.ID, State: "active", Connections: 3, Requests: 7}}})
	status, out = e.do(e.bob, "GET", "/v1/intercepts/bobs", "")
	if status != 200 || json.Unmarshal([]byte(out), &ic) != nil || ic.State != api.InterceptActive || ic.Requests != 7 || ic.Connections != 3 || ic.StateAt.IsZero() {
		t.Errorf("bob reads the intercept into his workspace by name: %d %s; want active, 3 connections, 7 requests", status, out)
	}
	if status, out := e.do(e.bob, "DELETE", "/v1/intercepts/bobs", ""); status != 204 {
		t.Errorf("bob stops the intercept into his workspace: %d %s", status, out)
	}
	_, audit := e.do(e.admin, "GET", "/v1/audit?since=0", "")
	for _, want := range []string{`"action": "intercept.create",
    "object": "intercept/bobs"`, `"actor": "bob",
    "action": "intercept.delete",
    "object": "intercept/bobs"`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit lacks %s:\n%s", want, audit)
		}
	}
}

func apply(t *testing.T, e *env, op string, data any) {
	t.Helper()
	c, _ := fsm.NewCommand(op, "test", "", data)
	if res, _ := e.b.Apply(context.Background(), c); res.Err != nil {
		t.Fatalf("%s: %v", op, res.Err)
	}
}

// TestWorkspaceAPIIntercepts: inside a workspace, intercepts send traffic to it and no other
// workspace, with its owner's rights on environments; it lists and stops only its own.
func TestWorkspaceAPIIntercepts(t *testing.T) {
	e := newEnv(t)
	apply(t, e, "workspace.create", fsm.Workspace{ID: "w3", Name: "alice-ws2", OwnerID: "u-alice", Machine: "wm1", Image: "img"})
	s := &Server{Backend: e.b, Logf: t.Logf, Secrets: e.key}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeWorkspace(w, r, r.Header.Get("X-Workspace"))
	}))
	defer srv.Close()
	do := func(ws, method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("X-Workspace", ws)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	status, out := do("alice-ws", "POST", "/v1/intercepts", interceptBody("alice-env", "api", 8080, "", "X-Dev", "alice"))
	var ic api.Intercept
	if status != 201 || json.Unmarshal([]byte(out), &ic) != nil || ic.Workspace != "alice-ws" || ic.Owner != "alice" {
		t.Fatalf("from alice-ws with no workspace: %d %s; want 201 into alice-ws, as alice", status, out)
	}
	// From outside, the admin sends another to alice-ws2.
	if status, out := e.do(e.admin, "POST", "/v1/intercepts", interceptBody("alice-env", "api", 8080, "alice-ws2", "X-Dev", "root")); status != 201 {
		t.Fatalf("admin: %d %s", status, out)
	}
	before := e.snapshot()
	for _, c := range []struct {
		ws, body, says string
		status         int
	}{
		{"alice-ws", interceptBody("alice-env", "api", 8080, "bob-ws", "X-Dev", "x"), "intercepts send traffic to alice-ws only", 403},
		{"alice-ws", interceptBody("alice-env", "api", 8080, "alice-ws2", "X-Dev", "x"), "intercepts send traffic to alice-ws only", 403},
		{"bob-ws", interceptBody("alice-env", "api", 8080, "", "X-Dev", "x"), `alice-env\" is not yours`, 403},
	} {
		if status, out := do(c.ws, "POST", "/v1/intercepts", c.body); status != c.status || !strings.Contains(out, c.says) {
			t.Errorf("from %s: %s: %d %s; want %d about %q", c.ws, c.body, status, out, c.status, c.says)
		}
	}
	other := e.b.f.Store().InterceptsTo("alice-ws2")[0].ID
	if status, _ := do("alice-ws", "DELETE", "/v1/intercepts/"+other, ""); status != 404 {
		t.Errorf("alice-ws stops the intercept into alice-ws2: %d, want 404", status)
	}
	if status, _ := do("alice-ws", "GET", "/v1/intercepts/"+other, ""); status != 404 {
		t.Errorf("alice-ws reads the intercept into alice-ws2: %d, want 404", status)
	}
	if e.snapshot() != before {
		t.Errorf("refused requests changed the state")
	}
	status, out = do("alice-ws", "GET", "/v1/intercepts", "")
	var l []api.Intercept
	if status != 200 || json.Unmarshal([]byte(out), &l) != nil || len(l) != 1 || l[0].ID != ic.ID {
		t.Errorf("alice-ws lists: %d %s; want its own only", status, out)
	}
	if status, out := do("alice-ws", "DELETE", "/v1/intercepts/"+ic.ID, ""); status != 204 {
		t.Errorf("alice-ws stops its own: %d %s", status, out)
	}
}
