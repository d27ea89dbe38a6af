package adminapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestWorkspaceAPI: a workspace's own API answers as its owner, reads only. Alice's workspace
// sees her environment and her workspaces; Bob's does not see hers; no write, no other route,
// whatever the workspace asks.
func TestWorkspaceAPI(t *testing.T) {
	e := newEnv(t)
	s := &Server{Backend: e.b, Logf: t.Logf, Secrets: e.key}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeWorkspace(w, r, r.Header.Get("X-Workspace")) // as control vouches for it
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
	if status, body := do("alice-ws", "GET", "/v1/environments/alice-env", ""); status != 200 || !strings.Contains(body, `"owner": "alice"`) {
		t.Errorf("alice's workspace reading her environment: %d %s", status, body)
	}
	if status, body := do("bob-ws", "GET", "/v1/environments/alice-env", ""); status != 404 {
		t.Errorf("bob's workspace reading alice's environment: %d %s, want 404", status, body)
	}
	status, body := do("alice-ws", "GET", "/v1/workspaces", "")
	var list []map[string]any
	if status != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list) != 1 || list[0]["name"] != "alice-ws" {
		t.Errorf("alice's workspace listing workspaces: %d %s, want hers only", status, body)
	}
	before := e.snapshot()
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/workspaces", `{"name": "x", "machine": "wm1", "image": "img"}`},
		{"DELETE", "/v1/environments/alice-env", ""},
		{"POST", "/v1/environments/alice-env/down", ""},
		{"PUT", "/v1/workspaces/alice-ws/env", `{"env": ""}`},
		{"GET", "/v1/users", ""},
		{"GET", "/v1/audit", ""},
		{"POST", "/v1/apikeys", `{}`},
	} {
		if status, body := do("alice-ws", c.method, c.path, c.body); status != 403 || !strings.Contains(body, "not served inside a workspace") {
			t.Errorf("%s %s from a workspace: %d %s, want 403", c.method, c.path, status, body)
		}
	}
	if after := e.snapshot(); after != before {
		t.Errorf("refused requests changed the state")
	}
	if status, body := do("gone-ws", "GET", "/v1/workspaces", ""); status != 404 {
		t.Errorf("a deleted workspace's API: %d %s, want 404", status, body)
	}
}
