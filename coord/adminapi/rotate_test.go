package adminapi

import (
	"encoding/json"
	"net/http"
	"testing"

	"meshwork.dev/coord/api"
)

// rotate rotates key id with caller's key and returns the status and the new key.
func (e *env) rotate(caller, id string) (int, api.NewAPIKey) {
	e.t.Helper()
	status, body := e.do(caller, "POST", "/v1/apikeys/"+id+"/rotate", "")
	var k api.NewAPIKey
	if status == http.StatusCreated {
		if err := json.Unmarshal([]byte(body), &k); err != nil {
			e.t.Fatalf("rotate answer %q: %v", body, err)
		}
	}
	return status, k
}

// TestRotateAPIKey: rotating a key gives a new one for the same user that works, and the old
// one stops working; a member rotates her own keys only, an admin anyone's.
func TestRotateAPIKey(t *testing.T) {
	e := newEnv(t)
	works := func(who, key string, want bool) {
		t.Helper()
		status, _ := e.do(key, "GET", "/v1/apikeys", "")
		if (status == http.StatusOK) != want {
			t.Errorf("%s's key answered %d; want it working: %v", who, status, want)
		}
	}

	// The first admin rotates its own key.
	status, k := e.rotate(e.admin, keyID(e.admin))
	if status != http.StatusCreated || k.APIKey.User != "root" || k.Key == "" {
		t.Fatalf("admin rotates its key: %d %+v", status, k)
	}
	works("the admin's old", e.admin, false)
	works("the admin's new", k.Key, true)
	e.admin = k.Key

	// A member may not rotate another's key (nor learn it exists); bob's key still works.
	if status, _ := e.rotate(e.alice, keyID(e.bob)); status != http.StatusNotFound {
		t.Errorf("alice rotates bob's key: %d, want 404", status)
	}
	works("bob's", e.bob, true)

	// She rotates her own.
	status, k = e.rotate(e.alice, keyID(e.alice))
	if status != http.StatusCreated || k.APIKey.User != "alice" {
		t.Fatalf("alice rotates her key: %d %+v", status, k)
	}
	works("alice's old", e.alice, false)
	works("alice's new", k.Key, true)

	// An admin rotates a member's key; a revoked key cannot be rotated back to life.
	if status, k = e.rotate(e.admin, keyID(e.bob)); status != http.StatusCreated || k.APIKey.User != "bob" {
		t.Fatalf("admin rotates bob's key: %d %+v", status, k)
	}
	works("bob's old", e.bob, false)
	if status, _ := e.rotate(e.admin, keyID(e.revoked)); status != http.StatusConflict {
		t.Errorf("rotating a revoked key: %d, want 409", status)
	}
}
