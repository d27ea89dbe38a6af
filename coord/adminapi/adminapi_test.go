package adminapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
	"meshwork.dev/coord/secret"
)

// localBackend applies commands straight to an FSM: the API without Raft, for fast tests.
// The replicated path is tested with real processes in ctl's lab tests.
type localBackend struct {
	mu    sync.Mutex
	f     *fsm.FSM
	index uint64
}

var _ Backend = (*localBackend)(nil)

func (b *localBackend) Apply(ctx context.Context, c *fsm.Command) (*fsm.Result, error) {
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.index++
	return b.f.Apply(&raft.Log{Index: b.index, Type: raft.LogCommand, Data: data}).(*fsm.Result), nil
}

func (b *localBackend) Read(ctx context.Context, consistency string) (*fsm.Store, error) {
	return b.f.Store(), nil
}
func (b *localBackend) Status() (api.Cluster, error) {
	return api.Cluster{ID: "c1", Leader: "c1", State: "Leader"}, nil
}
func (b *localBackend) RemoveMember(context.Context, string) error { return nil }
func (b *localBackend) Admit(api.JoinRequest) (*api.JoinResponse, error) {
	return nil, fmt.Errorf("no joins here")
}
func (b *localBackend) JoinToken() (string, error) { return "mj_test", nil }
func (b *localBackend) Unsupported() bool          { return false }

// env is an API with an admin (root), a member (alice) and her workspace on machine wm1.
type env struct {
	t       *testing.T
	srv     *httptest.Server
	b       *localBackend
	admin   string
	alice   string
	bob     string
	revoked string
	expired string
	key     *secret.Key
}

func newEnv(t *testing.T) *env {
	b := &localBackend{f: fsm.New(t.Logf)}
	e := &env{t: t, b: b}
	must := func(op string, data any) {
		c, _ := fsm.NewCommand(op, "test", "", data)
		if res, _ := b.Apply(context.Background(), c); res.Err != nil {
			t.Fatalf("%s: %v", op, res.Err)
		}
	}
	key := func(user string, exp *time.Time) string {
		k := keys.New(keys.APIKey)
		must("apikey.create", fsm.APIKey{ID: k.ID, UserID: user, Hash: k.Hash(), ExpiresAt: exp})
		return k.String()
	}
	must("cluster.init", fsm.ClusterInit{ULA: "fd00:1:2::/48"})
	must("user.create", fsm.User{ID: "u-root", Name: "root", Role: fsm.RoleAdmin})
	must("user.create", fsm.User{ID: "u-alice", Name: "alice", Role: fsm.RoleMember})
	must("user.create", fsm.User{ID: "u-bob", Name: "bob", Role: fsm.RoleMember})
	must("node.register", fsm.Node{ID: "n1", Name: "wm1", UserID: "u-root", Tags: []string{fsm.WorkmachineTag}})
	must("workspace.create", fsm.Workspace{ID: "w1", Name: "alice-ws", OwnerID: "u-alice", Machine: "wm1", Image: "img"})
	must("workspace.create", fsm.Workspace{ID: "w2", Name: "bob-ws", OwnerID: "u-bob", Machine: "wm1", Image: "img"})
	must("environment.create", fsm.Environment{ID: "e1", Name: "alice-env", OwnerID: "u-alice", Machine: "wm1",
		Services: []fsm.Service{{Name: "api", Image: "api", Ports: []int{8080}}}})
	e.admin, e.alice, e.bob = key("u-root", nil), key("u-alice", nil), key("u-bob", nil)
	past := time.Now().Add(-time.Hour)
	e.expired = key("u-alice", &past)
	e.revoked = key("u-alice", nil)
	k, _ := keys.Parse(e.revoked, keys.APIKey)
	must("apikey.revoke", fsm.ByID{ID: k.ID})
	var sk secret.Key
	rand.Read(sk[:])
	e.key = &sk
	e.srv = httptest.NewServer((&Server{Backend: b, Logf: t.Logf, Secrets: e.key}).Handler())
	t.Cleanup(e.srv.Close)
	return e
}

// register puts a machine of user on the mesh, as a join would.
func (e *env) register(name, user string) {
	e.t.Helper()
	c, _ := fsm.NewCommand("node.register", "test", "", fsm.Node{ID: "n-" + name, Name: name, UserID: user})
	if res, _ := e.b.Apply(context.Background(), c); res.Err != nil {
		e.t.Fatalf("register %s: %v", name, res.Err)
	}
}

// do sends a request and returns the status and body.
func (e *env) do(key, method, path, body string) (int, string) {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, r)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) snapshot() string {
	var b bytes.Buffer
	e.b.f.Store().WriteSnapshot(&b)
	return b.String()
}

// TestEveryRouteNeedsAKey sends every route no key, a malformed one, an unknown one, an
// expired one and a revoked one: all 401, nothing changed.
func TestEveryRouteNeedsAKey(t *testing.T) {
	e := newEnv(t)
	// Hundreds of bad keys from one address: the back-off (TestLoginBackOff) would soon
	// answer 429 instead of checking them.
	e.srv = httptest.NewServer((&Server{Backend: e.b, Logf: t.Logf, Secrets: e.key, LoginLimit: 1 << 20}).Handler())
	t.Cleanup(e.srv.Close)
	before := e.snapshot()
	for pattern := range (&Server{}).routes() {
		method, path, _ := strings.Cut(pattern, " ")
		path = strings.NewReplacer("{name}", "alice-ws", "{id}", "x").Replace(path)
		for what, key := range map[string]string{"no": "", "malformed": "hello", "unknown": keys.New(keys.APIKey).String(),
			"expired": e.expired, "revoked": e.revoked} {
			status, body := e.do(key, method, path, `{}`)
			if status != http.StatusUnauthorized || !strings.Contains(body, `"code": "unauthorized"`) {
				t.Errorf("%s with %s key: %d %s; want 401 unauthorized", pattern, what, status, body)
			}
		}
	}
	if withoutAudit(e.snapshot()) != withoutAudit(before) {
		t.Errorf("refused requests changed the state")
	}
	if n := strings.Count(e.snapshot(), `"action":"login.fail"`); n != 1 {
		t.Errorf("%d login.fail audit events; want one: failed logins audited, rate-limited", n)
	}
}

// withoutAudit is a snapshot without its audit events.
func withoutAudit(snap string) string {
	var keep []string
	for _, line := range strings.Split(snap, "\n") {
		if !strings.HasPrefix(line, `{"t":"audit"`) {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, key, method, path, body string
		status                        int
		says                          string
	}{
		{"malformed JSON", "admin", "POST", "/v1/users", `{"name": `, 400, "request body"},
		{"unknown field", "admin", "POST", "/v1/users", `{"name": "carol", "admin": true}`, 400, "unknown field"},
		{"two values", "admin", "POST", "/v1/users", `{"name": "carol"} {}`, 400, "more than one"},
		{"a stray brace after the value", "admin", "POST", "/v1/users", `{"name": "carol"}}`, 400, "more than one"},
		{"a key twice", "admin", "POST", "/v1/users", `{"name": "carol", "role": "member", "name": "dave"}`, 400, `"name" appears twice`},
		{"a key twice, one case-folded", "admin", "POST", "/v1/users", `{"name": "carol", "NAME": "dave"}`, 400, `did you mean "name"`},
		{"a field name in another case", "admin", "POST", "/v1/users", `{"Name": "carol"}`, 400, `unknown field "Name": field names are lower case; did you mean "name"?`},
		{"a key twice in a policy", "admin", "PUT", "/v1/policy", `{"text": "{}", "text": "{\"acls\": []}"}`, 400, "appears twice"},
		{"empty body", "admin", "POST", "/v1/users", ``, 400, "empty request body"},
		{"oversized", "admin", "POST", "/v1/users", `{"name": "` + strings.Repeat("a", maxBody) + `"}`, 413, "over"},
		{"duplicate user", "admin", "POST", "/v1/users", `{"name": "alice"}`, 409, "already exists"},
		{"invalid DNS label", "admin", "POST", "/v1/users", `{"name": "Carol!"}`, 400, "DNS"},
		{"bad role", "admin", "POST", "/v1/users", `{"name": "carol", "role": "god"}`, 400, "admin or member"},
		{"bad expiry", "alice", "POST", "/v1/apikeys", `{"expiry": "soon"}`, 400, "duration"},
		{"bad tag", "alice", "POST", "/v1/authkeys", `{"tags": ["wm"]}`, 400, "tag:NAME"},
		{"unknown machine", "alice", "POST", "/v1/workspaces", `{"name": "api", "machine": "nope", "image": "img"}`, 404, "meshctl node list"},
		{"workspace named like a node", "alice", "POST", "/v1/workspaces", `{"name": "wm1", "machine": "wm1", "image": "img"}`, 409, "taken by a node"},
		{"bad memory", "alice", "POST", "/v1/workspaces", `{"name": "api", "machine": "wm1", "image": "img", "memory": "lots"}`, 400, "512m"},
		{"malformed policy", "admin", "PUT", "/v1/policy", `{"text": "{\"acls\": [ {"}`, 400, "policy"},
		{"policy with unknown section", "admin", "PUT", "/v1/policy", `{"text": "{\"rules\": []}"}`, 400, "known sections"},
		{"bad consistency", "alice", "GET", "/v1/workspaces?consistency=eventual", ``, 400, "linearizable"},
		{"bad audit since", "admin", "GET", "/v1/audit?since=-1", ``, 400, "since"},
		{"no such route", "admin", "GET", "/v1/volumes", ``, 404, "no route"},
		{"restore of garbage", "admin", "PUT", "/v1/backup", `hello`, 400, "backup"},
		// A member touching what is not hers: refused as if it did not exist, or forbidden.
		{"member deletes another's workspace", "bob", "DELETE", "/v1/workspaces/alice-ws", ``, 404, "no workspace"},
		{"member stops another's workspace", "bob", "POST", "/v1/workspaces/alice-ws/stop", ``, 404, "no workspace"},
		{"member creates a user", "alice", "POST", "/v1/users", `{"name": "carol"}`, 403, "admins"},
		{"member deletes a user", "alice", "DELETE", "/v1/users/bob", ``, 403, "admins"},
		{"member key for another", "alice", "POST", "/v1/apikeys", `{"user": "bob"}`, 403, "only admins"},
		{"member reads the audit", "alice", "GET", "/v1/audit", ``, 403, "admins"},
		{"member sets the policy", "alice", "PUT", "/v1/policy", `{"text": "{}"}`, 403, "admins"},
		{"member takes a backup", "alice", "GET", "/v1/backup", ``, 403, "admins"},
		{"member gets the join token", "alice", "GET", "/v1/cluster/token", ``, 403, "admins"},
		{"broken compose file", "alice", "POST", "/v1/environments", `{"name": "qa", "machine": "wm1", "compose": "services: ["}`, 400, "compose file line 1: not valid YAML"},
		{"compose service without image", "alice", "POST", "/v1/environments", `{"name": "qa", "machine": "wm1", "compose": "services:\n  web:\n    build: .\n"}`, 400, `compose file line 3: service "web": build: Meshwork does not build, so there is no image`},
		{"refused compose key", "alice", "POST", "/v1/environments", `{"name": "qa", "machine": "wm1", "compose": "services:\n  web:\n    image: x\n    cap_add:\n      - CHOWN\n      - SYS_ADMIN\n"}`, 400, `compose file line 6: service "web": cap_add: SYS_ADMIN`},
		{"duplicate environment", "alice", "POST", "/v1/environments", `{"name": "alice-env", "machine": "wm1", "compose": "services:\n  web:\n    image: x\n"}`, 409, "already exists"},
		{"intercept of an unknown service", "alice", "POST", "/v1/intercepts", `{"env": "alice-env", "service": "web", "port": 80, "workspace": "alice-ws", "workspace_port": 3000}`, 404, "has no service"},
		{"member intercepts another's env", "bob", "POST", "/v1/intercepts", `{"env": "alice-env", "service": "api", "port": 8080, "workspace": "bob-ws", "workspace_port": 3000}`, 403, `environment "alice-env" is not yours`},
		{"member intercepts into another's workspace", "alice", "POST", "/v1/intercepts", `{"env": "alice-env", "service": "api", "port": 8080, "workspace": "bob-ws", "workspace_port": 3000}`, 404, "no workspace"},
		{"member connects to another's env", "bob", "PUT", "/v1/workspaces/bob-ws/env", `{"env": "alice-env"}`, 403, `environment "alice-env" is not yours`},
		{"member connects to no env", "bob", "PUT", "/v1/workspaces/bob-ws/env", `{"env": "nope"}`, 404, "no environment"},
		{"member updates another's env", "bob", "PUT", "/v1/environments/alice-env", `{"compose": "services:\n  web:\n    image: x\n"}`, 404, "no environment"},
		{"member deletes another's env", "bob", "DELETE", "/v1/environments/alice-env", ``, 404, "no environment"},
		{"member revokes another's key", "bob", "DELETE", "/v1/apikeys/" + keyID(e.alice), ``, 404, "no API key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.snapshot()
			key := map[string]string{"admin": e.admin, "alice": e.alice, "bob": e.bob}[tt.key]
			status, body := e.do(key, tt.method, tt.path, tt.body)
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

func keyID(key string) string {
	k, _ := keys.Parse(key, keys.APIKey)
	return k.ID
}

// TestMemberSeesOwn: listings show a member only her own things; admins see all.
func TestMemberSeesOwn(t *testing.T) {
	e := newEnv(t)
	if status, body := e.do(e.alice, "POST", "/v1/workspaces", `{"name": "api", "machine": "wm1", "image": "img", "memory": "2g"}`); status != 201 || !strings.Contains(body, `"memory_bytes": 2147483648`) {
		t.Fatalf("create: %d %s", status, body)
	}
	count := func(key, path string) int {
		_, body := e.do(key, "GET", path, "")
		var items []json.RawMessage
		if err := json.Unmarshal([]byte(body), &items); err != nil {
			t.Fatalf("%s: %s", path, body)
		}
		return len(items)
	}
	for _, c := range []struct {
		key, path string
		want      int
	}{{e.bob, "/v1/workspaces", 1}, {e.alice, "/v1/workspaces", 2}, {e.admin, "/v1/workspaces", 3},
		{e.bob, "/v1/users", 1}, {e.admin, "/v1/users", 3}, {e.bob, "/v1/apikeys", 1}} {
		if got := count(c.key, c.path); got != c.want {
			t.Errorf("%s as %s: %d items, want %d", c.path, keyID(c.key), got, c.want)
		}
	}
	if status, body := e.do(e.alice, "POST", "/v1/environments", `{"name": "qa", "machine": "wm1", "compose": "services:\n  postgres:\n    image: postgres:16\n    expose: [\"5432\"]\n"}`); status != 201 || !strings.Contains(body, `"ports": [`) {
		t.Errorf("env create: %d %s", status, body)
	}
	if status, body := e.do(e.alice, "PUT", "/v1/workspaces/api/env", `{"env": "qa"}`); status != 200 || !strings.Contains(body, `"env": "qa"`) {
		t.Errorf("env connect: %d %s", status, body)
	}
	status, body := e.do(e.alice, "POST", "/v1/intercepts", `{"env": "qa", "service": "postgres", "port": 5432, "workspace": "api", "workspace_port": 15432}`)
	var ic api.Intercept
	if status != 201 || json.Unmarshal([]byte(body), &ic) != nil {
		t.Fatalf("intercept: %d %s", status, body)
	}
	if status, _ := e.do(e.alice, "DELETE", "/v1/intercepts/"+ic.ID, ""); status != 204 {
		t.Errorf("intercept stop: %d", status)
	}
	if status, _ := e.do(e.alice, "POST", "/v1/workspaces/api/stop", ""); status != 200 {
		t.Errorf("owner stop: %d", status)
	}
	if status, _ := e.do(e.alice, "DELETE", "/v1/workspaces/api", ""); status != 204 {
		t.Errorf("owner delete: %d", status)
	}
	_, audit := e.do(e.admin, "GET", "/v1/audit?since=0", "")
	if !strings.Contains(audit, `"action": "workspace.delete"`) || !strings.Contains(audit, `"actor": "alice"`) {
		t.Errorf("audit lacks alice's delete: %s", audit)
	}
}

func TestIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	send := func() (int, string) {
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/users", strings.NewReader(`{"name": "carol"}`))
		req.Header.Set("Authorization", "Bearer "+e.admin)
		req.Header.Set("Idempotency-Key", "create-carol-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	s1, b1 := send()
	s2, b2 := send()
	if s1 != 201 || s2 != 201 || b1 != b2 {
		t.Errorf("retry with the same Idempotency-Key: %d %s then %d %s; want the same 201 twice", s1, b1, s2, b2)
	}
}

// TestComposeSealed: a compose file (which holds passwords) is encrypted before it enters
// the log; without a secret key coord refuses to store one.
func TestComposeSealed(t *testing.T) {
	e := newEnv(t)
	compose := "services:\n  db:\n    image: postgres\n    environment:\n      POSTGRES_PASSWORD: hunter2-xyzzy\n"
	body, _ := json.Marshal(api.CreateEnvironment{Name: "qa", Machine: "wm1", Compose: compose})
	if status, out := e.do(e.alice, "POST", "/v1/environments", string(body)); status != 201 {
		t.Fatalf("create: %d %s", status, out)
	}
	if strings.Contains(e.snapshot(), "hunter2-xyzzy") {
		t.Errorf("the password is in the state in plain text")
	}
	got, err := OpenCompose(e.key, e.b.f.Store().Environment("qa"))
	if err != nil || string(got) != compose {
		t.Errorf("OpenCompose = %q, %v", got, err)
	}

	bare := httptest.NewServer((&Server{Backend: e.b}).Handler())
	defer bare.Close()
	e.srv = bare
	if status, out := e.do(e.alice, "POST", "/v1/environments", strings.Replace(string(body), "qa", "qb", 1)); status != 503 || !strings.Contains(out, "--secret-key-file") {
		t.Errorf("without a key: %d %s; want 503 naming --secret-key-file", status, out)
	}
}

// TestBlockingQuery: a listing with ?index= waits for a change, as an agent's watch does.
func TestBlockingQuery(t *testing.T) {
	e := newEnv(t)
	req, _ := http.NewRequest("GET", e.srv.URL+"/v1/workspaces", nil)
	req.Header.Set("Authorization", "Bearer "+e.alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	index := resp.Header.Get("X-Meshwork-Index")
	if index == "" || index == "0" {
		t.Fatalf("X-Meshwork-Index = %q", index)
	}
	type answer struct {
		body    string
		elapsed time.Duration
	}
	got := make(chan answer)
	start := time.Now()
	go func() {
		_, body := e.do(e.alice, "GET", "/v1/workspaces?wait=10s&index="+index, "")
		got <- answer{body, time.Since(start)}
	}()
	time.Sleep(200 * time.Millisecond)
	if status, body := e.do(e.alice, "POST", "/v1/workspaces", `{"name": "new-one", "machine": "wm1", "image": "img"}`); status != 201 {
		t.Fatalf("create: %d %s", status, body)
	}
	a := <-got
	if !strings.Contains(a.body, "new-one") || a.elapsed < 200*time.Millisecond || a.elapsed > 5*time.Second {
		t.Errorf("blocking query answered after %v with %s; want the new workspace, after the change", a.elapsed, a.body)
	}
	if _, m := e.do(e.admin, "GET", "/metrics", ""); !strings.Contains(m, `meshwork_api_requests_total{route="POST /v1/workspaces"} 1`) || !strings.Contains(m, "meshwork_apply_seconds_count 1") ||
		!strings.Contains(m, "meshwork_raft_leader 1") {
		t.Errorf("metrics do not count the write:\n%s", m)
	}
	if status, _ := e.do(e.alice, "GET", "/v1/workspaces?index=x", ""); status != 400 {
		t.Errorf("bad index: %d", status)
	}
	if status, _ := e.do(e.alice, "GET", "/v1/workspaces?index=1&wait=1h", ""); status != 400 {
		t.Errorf("wait over the limit: %d", status)
	}
}
