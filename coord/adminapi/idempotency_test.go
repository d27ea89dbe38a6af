package adminapi

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/keys"
)

// doIdem sends a request with an Idempotency-Key and returns the status and body.
func (e *env) doIdem(key, idem, method, path, body string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Idempotency-Key", idem)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestIdempotencyKeyOtherBody: the same key with another body is refused with 422, not
// answered with the first request's result while its own write is dropped.
func TestIdempotencyKeyOtherBody(t *testing.T) {
	e := newEnv(t)
	first := `{"name": "one", "machine": "wm1", "image": "img"}`
	if status, body := e.doIdem(e.alice, "k-1", "POST", "/v1/workspaces", first); status != 201 {
		t.Fatalf("create: %d %s", status, body)
	}
	status, body := e.doIdem(e.alice, "k-1", "POST", "/v1/workspaces", `{"name": "two", "machine": "wm1", "image": "img"}`)
	if status != http.StatusUnprocessableEntity || !strings.Contains(body, api.CodeKeyReused) || !strings.Contains(body, "new key") {
		t.Errorf("same key, other body: %d %s; want 422 key_reused", status, body)
	}
	if e.b.f.Store().Workspace("two") != nil {
		t.Errorf("the refused request created its workspace")
	}
	if status, body := e.doIdem(e.alice, "k-1", "POST", "/v1/workspaces", first); status != 201 || !strings.Contains(body, `"name": "one"`) {
		t.Errorf("a true retry: %d %s; want the first answer", status, body)
	}
	if status, body := e.doIdem(e.alice, "k-2", "POST", "/v1/workspaces", `{"name": "two", "machine": "wm1", "image": "img"}`); status != 201 {
		t.Errorf("the second request with a key of its own: %d %s", status, body)
	}
}

// TestIdempotencyKeyPerCaller: another user sending the same key gets her own request
// done, never the first caller's object; so does the same caller on another route.
func TestIdempotencyKeyPerCaller(t *testing.T) {
	e := newEnv(t)
	body := `{"name": "%s", "machine": "wm1", "image": "img"}`
	if status, out := e.doIdem(e.alice, "shared", "POST", "/v1/workspaces", strings.Replace(body, "%s", "alices", 1)); status != 201 {
		t.Fatalf("alice: %d %s", status, out)
	}
	status, out := e.doIdem(e.bob, "shared", "POST", "/v1/workspaces", strings.Replace(body, "%s", "bobs", 1))
	var ws api.Workspace
	if status != 201 || json.Unmarshal([]byte(out), &ws) != nil || ws.Name != "bobs" || ws.Owner != "bob" {
		t.Errorf("bob with alice's key: %d %s; want his own workspace bobs", status, out)
	}
	if w := e.b.f.Store().Workspace("bobs"); w == nil || w.OwnerID != "u-bob" {
		t.Errorf("bob's workspace was not created: %+v", w)
	}
	if status, out := e.doIdem(e.alice, "shared", "POST", "/v1/workspaces/alices/stop", ""); status != 200 || !strings.Contains(out, `"desired": "stopped"`) {
		t.Errorf("alice's key on another route: %d %s; want the stop done", status, out)
	}
}

// TestIdempotentKeyCreate: a retried create of an API key or an auth key hands out the same
// secret, and it works; another caller with the same Idempotency-Key gets a key of her own.
func TestIdempotentKeyCreate(t *testing.T) {
	e := newEnv(t)
	created := func(user, path string) string {
		t.Helper()
		status, out := e.doIdem(user, "mint-1", "POST", path, `{}`)
		var k struct{ Key string }
		if status != 201 || json.Unmarshal([]byte(out), &k) != nil || k.Key == "" {
			t.Fatalf("%s: %d %s", path, status, out)
		}
		return k.Key
	}
	first, retry := created(e.alice, "/v1/apikeys"), created(e.alice, "/v1/apikeys")
	if first != retry {
		t.Errorf("a retried API key create handed out %s, then %s", first, retry)
	}
	if status, out := e.do(retry, "GET", "/v1/workspaces", ""); status != 200 || !strings.Contains(out, "alice-ws") {
		t.Errorf("the retried API key does not work: %d %s", status, out)
	}
	if n := len(e.b.f.Store().APIKeys("u-alice")); n != 4 { // 3 from newEnv, 1 made here
		t.Errorf("alice has %d API keys after a retried create; want 4", n)
	}
	if bobs := created(e.bob, "/v1/apikeys"); bobs == first || keyID(bobs) == keyID(first) {
		t.Errorf("bob with alice's Idempotency-Key got her key %s", bobs)
	}

	ak, akRetry := created(e.alice, "/v1/authkeys"), created(e.alice, "/v1/authkeys")
	k, err := keys.Parse(akRetry, keys.AuthKey)
	if ak != akRetry || err != nil {
		t.Fatalf("a retried auth key create handed out %s, then %s", ak, akRetry)
	}
	if rec := e.b.f.Store().AuthKey(k.ID); rec == nil || !k.Matches(rec.Hash) || rec.UserID != "u-alice" {
		t.Errorf("the retried auth key does not match its record %+v", rec)
	}
	if snap := e.snapshot(); strings.Contains(snap, k.Secret) || strings.Contains(snap, strings.Split(first, "_")[2]) {
		t.Errorf("a key's secret is in the state in plain text")
	}
}

func TestIdempotencyKeyTooLong(t *testing.T) {
	e := newEnv(t)
	status, out := e.doIdem(e.alice, strings.Repeat("k", maxIdemKey+1), "POST", "/v1/workspaces", `{"name": "one", "machine": "wm1", "image": "img"}`)
	if status != 400 || !strings.Contains(out, "Idempotency-Key of 256 bytes") {
		t.Errorf("a 256-byte key: %d %s; want 400", status, out)
	}
	if e.b.f.Store().Workspace("one") != nil {
		t.Errorf("the refused request created its workspace")
	}
	if status, out := e.doIdem(e.alice, strings.Repeat("k", maxIdemKey), "POST", "/v1/workspaces", `{"name": "one", "machine": "wm1", "image": "img"}`); status != 201 {
		t.Errorf("a 255-byte key: %d %s", status, out)
	}
}
