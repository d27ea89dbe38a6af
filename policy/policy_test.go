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
		`{"tagOwners": {"tag:prod": ["group:ops"]}}`:                    "not defined",
	}
	for text, want := range bad {
		if _, err := Parse([]byte(text)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) = %v; want an error about %q", text, err, want)
		}
	}
}

func TestOwnsTag(t *testing.T) {
	p, err := Parse([]byte(`{
		"groups": {"group:ops": ["carol"]},
		"tagOwners": {"tag:prod": ["group:ops", "alice"], "tag:ci": []},
	}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, tag string
		want      bool
	}{
		{"alice", "tag:prod", true}, {"carol", "tag:prod", true}, {"bob", "tag:prod", false},
		{"alice", "tag:ci", false}, {"alice", "tag:other", false}, {"group:ops", "tag:ci", false},
	} {
		if got := p.OwnsTag(c.user, c.tag); got != c.want {
			t.Errorf("OwnsTag(%s, %s) = %v, want %v", c.user, c.tag, got, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}`)
	f.Add("{\n // c\n \"egress\": [{\"src\": [\"ws:owner:bob\"], \"exit\": \"eu\"},],\n \"tests\": [{\"src\": \"bob\", \"deny\": [\"env:prod/db:5432\"]}]}")
	f.Fuzz(func(t *testing.T, s string) { Parse([]byte(s)) })
}
