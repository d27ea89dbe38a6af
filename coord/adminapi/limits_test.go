package adminapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"meshwork.dev/coord/api"
)

// TestCaps: sizes a member could make every replica hold are capped through the API, with a
// 400 naming the cap; a memory value with no number in it is refused, not a crash.
func TestCaps(t *testing.T) {
	e := newEnv(t)
	ws := func(field string) string {
		return `{"name": "big", "machine": "wm1", "image": "img", ` + field + `}`
	}
	tags := make([]string, 33)
	for i := range tags {
		tags[i] = fmt.Sprint("tag:t", i)
	}
	manyTags, _ := json.Marshal(api.CreateAuthKey{Tags: tags})
	bigEnv, _ := json.Marshal(api.CreateEnvironment{Name: "big", Machine: "wm1",
		Compose: "services:\n  s:\n    image: " + strings.Repeat("i", 600) + "\n"})
	tests := []struct {
		name, path, body, says string
	}{
		{"memory of just b", "/v1/workspaces", ws(`"memory": "b"`), "512m"},
		{"memory of just B", "/v1/workspaces", ws(`"memory": "B"`), "512m"},
		{"memory of just g", "/v1/workspaces", ws(`"memory": "g"`), "512m"},
		{"memory of NaN", "/v1/workspaces", ws(`"memory": "nan"`), "512m"},
		{"memory of Inf", "/v1/workspaces", ws(`"memory": "infg"`), "512m"},
		{"memory over the cap", "/v1/workspaces", ws(`"memory": "1e30g"`), "over the limit"},
		{"CPUs over the cap", "/v1/workspaces", ws(`"cpu": 1e9`), "CPUs is over the limit"},
		{"a long image reference", "/v1/workspaces", `{"name": "big", "machine": "wm1", "image": "` + strings.Repeat("i", 600) + `"}`, "image reference"},
		{"too many tags", "/v1/authkeys", string(manyTags), "tags: 33 is over the limit of 32"},
		{"a long API key name", "/v1/apikeys", `{"name": "` + strings.Repeat("n", 65) + `"}`, "API key's name"},
		{"a service's long image reference", "/v1/environments", string(bigEnv), "image reference of service s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.snapshot()
			status, body := e.do(e.admin, "POST", tt.path, tt.body)
			var eb struct{ Error api.Error }
			if status != http.StatusBadRequest || json.Unmarshal([]byte(body), &eb) != nil || !strings.Contains(eb.Error.Message, tt.says) {
				t.Errorf("%d %s; want 400 saying %q", status, body, tt.says)
			}
			if e.snapshot() != before {
				t.Errorf("a refused request changed the state")
			}
		})
	}
}
