package control

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"tailscale.com/wgengine/filter"

	"meshwork.dev/coord/adminapi"
	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
)

// apiBackend is the world's FSM behind an admin API.
type apiBackend struct{ *local }

func (apiBackend) Status() (api.Cluster, error) {
	return api.Cluster{ID: "c1", Leader: "c1", State: "Leader"}, nil
}
func (apiBackend) RemoveMember(context.Context, string) error { return nil }
func (apiBackend) Admit(api.JoinRequest) (*api.JoinResponse, error) {
	return nil, errors.New("no joins here")
}
func (apiBackend) JoinToken() (string, error) { return "mj_test", nil }
func (apiBackend) Unsupported() bool          { return false }

// adminAPI serves the world's admin API as coord does (with control's Policies), and
// returns it with API keys of root (admin) and alice (member).
func (w *world) adminAPI() (url, root, alice string) {
	key := func(user string) string {
		k := keys.New(keys.APIKey)
		w.l.must(w.t, "apikey.create", fsm.APIKey{ID: k.ID, UserID: user, Hash: k.Hash()})
		return k.String()
	}
	srv := httptest.NewServer((&adminapi.Server{Backend: apiBackend{w.l}, Logf: w.t.Logf, Secrets: w.key, Policies: Policies{}}).Handler())
	w.t.Cleanup(srv.Close)
	return srv.URL, key("u-root"), key("u-a")
}

func call(t *testing.T, url, key, method, path string, body any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, url+path, strings.NewReader(string(b)))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// TestPolicySelectorsCompiled: a policy set through the admin API naming workspaces,
// environment services and autogroup:self reaches the nodes' packet filter as exactly those
// addresses; what it does not name is dropped.
func TestPolicySelectorsCompiled(t *testing.T) {
	w := newWorld(t)
	url, root, _ := w.adminAPI()
	pol := `{
		"acls": [
			{"action": "accept", "src": ["bob"], "dst": ["ws:a-ws:22"]},
			{"action": "accept", "src": ["ws:owner:alice"], "dst": ["env:prod/web:80"]},
			{"action": "accept", "src": ["*"], "dst": ["autogroup:self:*"]},
		],
	}`
	if code, body := call(t, url, root, "PUT", "/v1/policy", api.Policy{Text: pol}); code != 200 {
		t.Fatalf("policy set: %d %s", code, body)
	}
	cases := []struct {
		from, to string
		port     uint16
		ok       bool
	}{
		{"b-laptop", "a-ws", 22, true},
		{"b-laptop", "a-ws", 23, false},
		{"b-laptop", "a-ws2", 22, false},
		{"a-ws", "prod/web", 80, true},
		{"a-ws2", "prod/web", 80, true},
		{"a-ws", "prod/web", 81, false},
		{"b-ws", "staging/db", 80, false},
		{"a-laptop", "a-ws2", 9999, true}, // autogroup:self
		{"a-ws", "a-laptop", 22, true},
		{"a-laptop", "b-ws", 22, false},
		{"b-laptop", "b-ws", 22, true},
		{"r-laptop", "a-ws", 22, false},
		{"a-laptop", "wm1", 22, false}, // tagged: no one's own
	}
	f := w.packetFilter()
	for _, c := range cases {
		for _, v6 := range []bool{false, true} {
			got := f.CheckTCP(w.addr(c.from, v6), w.addr(c.to, v6), c.port) == filter.Accept
			if got != c.ok {
				t.Errorf("%s → %s:%d (IPv6 %v) allowed %v; want %v", c.from, c.to, c.port, v6, got, c.ok)
			}
		}
	}
}

// TestPolicySetRunsTests: policy set runs the file's tests against the state and refuses it,
// naming the failing test and destination, leaving the policy in force; policy test runs
// them without setting; both are for admins.
func TestPolicySetRunsTests(t *testing.T) {
	w := newWorld(t)
	url, root, alice := w.adminAPI()
	good := `{"acls": [{"action": "accept", "src": ["bob"], "dst": ["ws:a-ws:22"]}],
		"tests": [{"src": "bob", "accept": ["ws:a-ws:22"], "deny": ["ws:a-ws2:22", "env:staging/db:5432"]}]}`
	if code, body := call(t, url, root, "PUT", "/v1/policy", api.Policy{Text: good}); code != 200 {
		t.Fatalf("a policy whose tests pass: %d %s", code, body)
	}
	bad := `{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
		"tests": [
			{"src": "alice", "accept": ["ws:a-ws:22"]},
			{"src": "b-laptop", "deny": ["ws:a-ws:22"]},
		]}`
	code, body := call(t, url, root, "PUT", "/v1/policy", api.Policy{Text: bad})
	want := `line 4: tests[1] (src \"b-laptop\"): deny ws:a-ws:22 fails`
	if code != 400 || !strings.Contains(body, want) || !strings.Contains(body, "acls[0]") {
		t.Errorf("a policy with a failing test: %d %s; want 400 naming %s and acls[0]", code, body, want)
	}
	if got := w.store().Policy().Text; got != good {
		t.Errorf("after a refused set the policy is %q; want the old one", got)
	}
	code, body = call(t, url, root, "POST", "/v1/policy/test", api.Policy{Text: bad})
	if code != 400 || !strings.Contains(body, want) {
		t.Errorf("policy test of the failing file: %d %s", code, body)
	}
	code, body = call(t, url, root, "POST", "/v1/policy/test", api.Policy{Text: good})
	if code != 200 || !strings.Contains(body, `"tests": 1`) {
		t.Errorf("policy test of the passing file: %d %s", code, body)
	}
	if got := w.store().Policy().Text; got != good {
		t.Errorf("policy test changed the policy")
	}
	for _, path := range []string{"/v1/policy/test", "/v1/policy/explain"} {
		if code, _ := call(t, url, alice, "POST", path, api.Policy{Text: good}); code != 403 {
			t.Errorf("a member's %s: %d; want 403", path, code)
		}
		if code, _ := call(t, url, "", "POST", path, api.Policy{Text: good}); code != 401 {
			t.Errorf("an unauthenticated %s: %d; want 401", path, code)
		}
	}
}

// TestPolicyExplainAPI: explain names the acl that allows, default deny, and the mesh without
// a policy.
func TestPolicyExplainAPI(t *testing.T) {
	w := newWorld(t)
	url, root, _ := w.adminAPI()
	explain := func(src, dst string) (int, api.PolicyVerdict, string) {
		code, body := call(t, url, root, "POST", "/v1/policy/explain", api.PolicyExplainRequest{Src: src, Dst: dst})
		var v api.PolicyVerdict
		json.Unmarshal([]byte(body), &v)
		return code, v, body
	}
	if code, v, body := explain("bob", "ws:a-ws:22"); code != 200 || !v.Allowed || v.Rule != -1 || !strings.Contains(v.Text, "no policy is set") {
		t.Errorf("no policy: %d %s", code, body)
	}
	if code, v, body := explain("bob", "env:staging/db:5432"); code != 200 || v.Allowed {
		t.Errorf("no policy, another's environment: %d %s; want denied", code, body)
	}
	pol := `{"acls": [{"action": "accept", "src": ["group:x"], "dst": ["a-laptop:1"]}, {"action": "accept", "src": ["bob"], "dst": ["ws:a-ws:22"]}], "groups": {"group:x": []}}`
	if code, body := call(t, url, root, "PUT", "/v1/policy", api.Policy{Text: pol}); code != 200 {
		t.Fatal(code, body)
	}
	if code, v, body := explain("bob", "ws:a-ws:22"); code != 200 || !v.Allowed || v.Rule != 1 || !strings.Contains(v.Text, `"ws:a-ws:22"`) {
		t.Errorf("bob → ws:a-ws:22: %d %s; want allowed by acls[1]", code, body)
	}
	if code, v, body := explain("bob", "ws:a-ws2:22"); code != 200 || v.Allowed || v.Rule != -1 || !strings.Contains(v.Text, "no rule allows") {
		t.Errorf("bob → ws:a-ws2:22: %d %s; want denied", code, body)
	}
	if code, _, body := explain("bob", "ws:ghost:22"); code != 400 || !strings.Contains(body, "names no machine") {
		t.Errorf("an unknown workspace: %d %s; want 400", code, body)
	}
}
