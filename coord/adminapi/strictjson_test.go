package adminapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"meshwork.dev/coord/api"
)

// TestCheckKeys: duplicate keys and case-folded names are refused at any depth the target
// type reaches; a map's keys are data, not field names.
func TestCheckKeys(t *testing.T) {
	type inner struct {
		Port int `json:"port"`
	}
	type outer struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
		Items  []inner           `json:"items"`
		Raw    json.RawMessage   `json:"raw"`
		Plain  int
	}
	tests := []struct {
		body, says string // says "": accepted
	}{
		{`{"name": "a", "labels": {"Name": "x", "name": "y"}, "items": [{"port": 1}], "raw": {"A": 1, "a": 2}, "Plain": 3}`, ""},
		{`{"items": [{"port": 1, "port": 2}]}`, `"port" appears twice`},
		{`{"items": [{"Port": 1}]}`, `did you mean "port"`},
		{`{"labels": {"a": "x", "a": "y"}}`, `"a" appears twice`},
		{`{"plain": 3}`, `did you mean "Plain"`},
		{`{"name": "a", "name": "a"}`, `"name" appears twice`},
	}
	for _, tt := range tests {
		var v outer
		err := decodeJSON([]byte(tt.body), &v)
		if tt.says == "" && err != nil || tt.says != "" && (err == nil || !strings.Contains(err.Error(), tt.says)) {
			t.Errorf("%s: %v; want %q", tt.body, err, tt.says)
		}
	}
}

// FuzzDecode: whatever the body, decoding a request answers or refuses with a 400, never
// panics, and accepts only one valid JSON value without a key twice.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"name": "api", "machine": "wm1", "image": "img", "memory": "2g", "cpu": 1.5}`,
		`{"tags": ["tag:a"], "reusable": true, "expiry": "1h"}`,
		`{"name": "a", "name": "b"}`,
		`{"Name": "a"}`,
		`{"text": "{}"}`,
		`[1, {"a": [{"b": {}}]}]`,
		`{"name": "a"} {}`,
		``,
		`{"name": "\u00e9\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []any{new(api.CreateWorkspace), new(api.CreateAuthKey), new(api.CreateEnvironment), new(api.UpdateEnvironment),
			new(api.CreateUser), new(api.Policy), new(api.JoinRequest), new(map[string]any), new(any)} {
			err := decodeJSON(data, v)
			var ae *api.Error
			if err != nil && (!errors.As(err, &ae) || ae.Status != http.StatusBadRequest) {
				t.Fatalf("%q into %T: %v; want a 400", data, v, err)
			}
			if err == nil && !json.Valid(data) {
				t.Fatalf("%q into %T: accepted, but it is not one JSON value", data, v)
			}
		}
	})
}
