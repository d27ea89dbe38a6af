package adminapi

import (
	"encoding/json"
	"strings"
	"testing"

	"meshwork.dev/coord/api"
)

// envCompose is a compose file with a secret from a variable and a config inline.
const envCompose = `services:
  db:
    image: postgres:16
    expose: ["5432"]
    secrets: [db_password]
    configs: [init]
  api:
    image: api:1
    ports: ["8080:8080"]
secrets:
  db_password:
    environment: DB_PASSWORD
configs:
  init:
    content: inline-config-quux
`

// Values that must never leave coord in the clear.
const (
	secretValue = "s3cret-xyzzy-value"
	configValue = "inline-config-quux"
)

func (e *env) createEnv(key, name, compose string, vars map[string]string) (int, string) {
	e.t.Helper()
	body, _ := json.Marshal(api.CreateEnvironment{Name: name, Machine: "wm1", Compose: compose, Variables: vars})
	return e.do(key, "POST", "/v1/environments", string(body))
}

func (e *env) updateEnv(key, name, compose string, vars map[string]string) (int, string) {
	e.t.Helper()
	body, _ := json.Marshal(api.UpdateEnvironment{Compose: compose, Variables: vars})
	return e.do(key, "PUT", "/v1/environments/"+name, string(body))
}

// TestEnvironmentVariables: a secret's variable must come with the request, named in the
// error with the fix when it does not; a variable the file does not use is refused; a
// refused request changes nothing.
func TestEnvironmentVariables(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		vars map[string]string
		says []string
	}{
		{"missing variable", nil, []string{`secret "db_password"`, "variable DB_PASSWORD", "export DB_PASSWORD=… before meshctl env create"}},
		{"extra variable", map[string]string{"DB_PASSWORD": secretValue, "OTHER": "x"}, []string{"variable OTHER is not used", "do not send it"}},
		{"too many", manyVars(), []string{"at most 64"}},
		{"too large", map[string]string{"DB_PASSWORD": strings.Repeat("x", maxVariableBytes)}, []string{"at most 65536", "in the image"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.snapshot()
			status, body := e.createEnv(e.alice, "qa", envCompose, tt.vars)
			if status != 400 || strings.Contains(body, secretValue) {
				t.Errorf("%d %s; want 400 without the value", status, body)
			}
			var eb struct{ Error api.Error }
			json.Unmarshal([]byte(body), &eb)
			for _, w := range tt.says {
				if !strings.Contains(eb.Error.Message, w) {
					t.Errorf("error %s does not say %q", body, w)
				}
			}
			if e.snapshot() != before {
				t.Errorf("a refused request changed the state")
			}
		})
	}
	before := e.snapshot()
	status, body := e.updateEnv(e.alice, "alice-env", envCompose, nil)
	if status != 400 || !strings.Contains(body, "before meshctl env update") || e.snapshot() != before {
		t.Errorf("update without the variable: %d %s; want 400 naming meshctl env update, nothing changed", status, body)
	}
}

func manyVars() map[string]string {
	m := map[string]string{"DB_PASSWORD": secretValue}
	for i := range 70 {
		m["V"+strings.Repeat("X", i)] = "x"
	}
	return m
}

// TestEnvironmentSecretsStayInside: the secret's value and the compose file's text are in
// no answer, no audit event, and not in the state unsealed; they open with the key.
func TestEnvironmentSecretsStayInside(t *testing.T) {
	e := newEnv(t)
	vars := map[string]string{"DB_PASSWORD": secretValue}
	status, created := e.createEnv(e.alice, "qa", envCompose, vars)
	if status != 201 {
		t.Fatalf("create: %d %s", status, created)
	}
	_, got := e.do(e.alice, "GET", "/v1/environments/qa", "")
	_, list := e.do(e.admin, "GET", "/v1/environments", "")
	_, updated := e.updateEnv(e.alice, "qa", envCompose, vars)
	_, audit := e.do(e.admin, "GET", "/v1/audit?since=0", "")
	answers := map[string]string{"create": created, "get": got, "list": list, "update": updated, "audit": audit, "state": e.snapshot()}
	for what, text := range answers {
		for _, v := range []string{secretValue, configValue, "DB_PASSWORD", "postgres:16\n"} {
			if strings.Contains(text, v) {
				t.Errorf("%s holds %q", what, v)
			}
		}
	}
	stored := e.b.f.Store().Environment("qa")
	if opened, err := OpenVariables(e.key, stored); err != nil || opened["DB_PASSWORD"] != secretValue || len(opened) != 1 {
		t.Errorf("OpenVariables = %v, %v", opened, err)
	}
	if c, err := OpenCompose(e.key, stored); err != nil || string(c) != envCompose {
		t.Errorf("OpenCompose = %q, %v", c, err)
	}
	// Sealed for its environment: another's AAD does not open it.
	other := *stored
	other.Name = "alice-env"
	if _, err := OpenVariables(e.key, &other); err == nil {
		t.Errorf("the variables opened as another environment's")
	}
}

// TestEnvironmentUpdate: an update changes the services; the ones that stay keep their
// addresses; answers carry addresses, DNS names and observed state.
func TestEnvironmentUpdate(t *testing.T) {
	e := newEnv(t)
	status, body := e.createEnv(e.alice, "qa", envCompose, map[string]string{"DB_PASSWORD": secretValue})
	var before api.Environment
	if status != 201 || json.Unmarshal([]byte(body), &before) != nil {
		t.Fatalf("create: %d %s", status, body)
	}
	svc := func(env api.Environment, name string) api.Service {
		for _, s := range env.Services {
			if s.Name == name {
				return s
			}
		}
		return api.Service{}
	}
	db := svc(before, "db")
	if db.IPv4 == "" || db.IPv6 == "" || db.DNSName != "db.qa.mesh.internal" || db.State != "" {
		t.Errorf("db in the answer: %+v", db)
	}
	next := "services:\n  db:\n    image: postgres:17\n  cache:\n    image: redis\n"
	status, body = e.updateEnv(e.alice, "qa", next, nil)
	var after api.Environment
	if status != 200 || json.Unmarshal([]byte(body), &after) != nil {
		t.Fatalf("update: %d %s", status, body)
	}
	if got := svc(after, "db"); got.IPv4 != db.IPv4 || got.IPv6 != db.IPv6 || got.Image != "postgres:17" {
		t.Errorf("db after update %+v; want its addresses %s %s kept", got, db.IPv4, db.IPv6)
	}
	if svc(after, "api").Name != "" || svc(after, "cache").IPv4 == "" || !after.UpdatedAt.After(before.UpdatedAt) {
		t.Errorf("after update: %+v", after)
	}
	if e.b.f.Store().Environment("qa").Variables != "" {
		t.Errorf("variables of the old file kept after an update that names none")
	}
	if status, body := e.updateEnv(e.alice, "qa", "services: [", nil); status != 400 || !strings.Contains(body, "compose file") {
		t.Errorf("broken update: %d %s", status, body)
	}
	if status, _ := e.updateEnv(e.bob, "qa", next, nil); status != 404 {
		t.Errorf("bob updates alice's environment: %d; want 404", status)
	}
}

// TestConnectPermissions: a workspace connects to an environment its owner may use; another
// member's environment is 403 with a clear message, a missing one 404; an admin may.
func TestConnectPermissions(t *testing.T) {
	e := newEnv(t)
	if status, body := e.do(e.alice, "PUT", "/v1/workspaces/alice-ws/env", `{"env": "alice-env"}`); status != 200 {
		t.Errorf("owner connects: %d %s", status, body)
	}
	if status, body := e.do(e.bob, "PUT", "/v1/workspaces/bob-ws/env", `{"env": "alice-env"}`); status != 403 || !strings.Contains(body, "not yours") {
		t.Errorf("bob connects to alice's env: %d %s; want 403", status, body)
	}
	if w := e.b.f.Store().Workspace("bob-ws"); w.Env != "" {
		t.Errorf("bob's workspace connected to %q after a refusal", w.Env)
	}
	if status, body := e.do(e.bob, "PUT", "/v1/workspaces/bob-ws/env", `{"env": "ghost"}`); status != 404 {
		t.Errorf("connect to a missing env: %d %s; want 404", status, body)
	}
	if status, body := e.do(e.admin, "PUT", "/v1/workspaces/bob-ws/env", `{"env": "alice-env"}`); status != 200 {
		t.Errorf("admin connects: %d %s", status, body)
	}
}
