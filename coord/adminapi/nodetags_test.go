package adminapi

import (
	"net/http"
	"strings"
	"testing"
)

// TestTagsAreOwned: a member mints no key with a tag and tags no machine unless the policy's
// tagOwners gives her the tag; admins may; only workmachines host workspaces.
func TestTagsAreOwned(t *testing.T) {
	e := newEnv(t)
	key := map[string]string{"admin": e.admin, "alice": e.alice, "bob": e.bob}
	step := func(who, method, path, body string, status int, says string) {
		t.Helper()
		got, resp := e.do(key[who], method, path, body)
		if got != status || !strings.Contains(resp, says) {
			t.Errorf("%s %s %s %s: %d %s; want %d and %q", who, method, path, body, got, resp, status, says)
		}
	}
	step("alice", "POST", "/v1/authkeys", `{"tags": ["tag:prod"]}`, http.StatusForbidden, "not an owner of tag:prod")
	step("alice", "POST", "/v1/authkeys", `{"tags": ["tag:workmachine"]}`, http.StatusForbidden, "not an owner")
	step("admin", "POST", "/v1/authkeys", `{"tags": ["tag:prod"]}`, http.StatusCreated, "tag:prod")
	step("alice", "PUT", "/v1/nodes/wm1/tags", `{"tags": []}`, http.StatusNotFound, "no node")
	step("admin", "PUT", "/v1/policy", `{"text": "{\"tagOwners\": {\"tag:prod\": [\"alice\"]}}"}`, http.StatusOK, "")
	step("alice", "POST", "/v1/authkeys", `{"tags": ["tag:prod"]}`, http.StatusCreated, "tag:prod")
	step("bob", "POST", "/v1/authkeys", `{"tags": ["tag:prod"]}`, http.StatusForbidden, "not an owner")
	// A machine of alice's: she may give it tag:prod, not tag:workmachine; it hosts no workspace.
	e.register("laptop", "u-alice")
	step("alice", "PUT", "/v1/nodes/laptop/tags", `{"tags": ["tag:workmachine"]}`, http.StatusForbidden, "not an owner")
	step("alice", "POST", "/v1/workspaces", `{"name": "api", "machine": "laptop", "image": "img"}`, http.StatusBadRequest, "not a workmachine")
	step("alice", "PUT", "/v1/nodes/laptop/tags", `{"tags": ["tag:prod"]}`, http.StatusOK, `"tag:prod"`)
	step("bob", "PUT", "/v1/nodes/laptop/tags", `{"tags": []}`, http.StatusNotFound, "no node")
	step("admin", "PUT", "/v1/nodes/laptop/tags", `{"tags": ["tag:workmachine"]}`, http.StatusOK, "tag:workmachine")
	step("alice", "POST", "/v1/workspaces", `{"name": "api", "machine": "laptop", "image": "img"}`, http.StatusCreated, "laptop")
}
