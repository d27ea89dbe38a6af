package policy

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := `{
		// the dev team reaches everything
		"groups": {"group:dev": ["alice", "bob"]},
		"acls": [{"action": "accept", "src": ["group:dev"], "dst": ["*:*"]},],
		"ssh": [{"action": "accept", "src": ["group:dev"], "dst": ["api"], "users": ["dev"]}],
	}`
	p, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.ACLs) != 1 || p.Groups["group:dev"][1] != "bob" {
		t.Errorf("parsed %+v", p)
	}
	bad := map[string]string{
		`{"acls": [`:  "policy:",
		`{"acl": []}`: "known sections",
		`{"acls": [{"action": "drop", "src": ["*"], "dst": ["*:*"]}]}`:         "only action is accept",
		`{"acls": [{"action": "accept", "src": ["*"], "dst": ["api"]}]}`:       "HOST:PORTS",
		`{"acls": [{"action": "accept", "src": ["group:x"], "dst": ["*:*"]}]}`: "not defined",
		`{"groups": {"dev": []}}`: "group:NAME",
		`{"ssh": [{"action": "accept", "src": ["*"], "dst": ["api"]}]}`: "users",
	}
	for text, want := range bad {
		if _, err := Parse([]byte(text)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) = %v; want an error about %q", text, err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}`)
	f.Fuzz(func(t *testing.T, s string) { Parse([]byte(s)) })
}
