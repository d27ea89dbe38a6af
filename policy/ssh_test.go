package policy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSSHGrants(t *testing.T) {
	p, err := Parse([]byte(`{
		"groups": {"group:dev": ["alice", "bob"]},
		"ssh": [
			{"action": "accept", "src": ["group:dev"], "dst": ["api"], "users": ["dev"]},
			{"action": "accept", "src": ["carol", "tag:ci"], "dst": ["*"], "users": ["root"]},
			{"action": "accept", "src": ["*"], "dst": ["web"], "users": ["*"]},
			{"action": "accept", "src": ["dave"], "dst": ["ws:db"], "users": ["dev"]},
		],
	}`))
	if err != nil {
		t.Fatal(err)
	}
	api := p.SSHGrants("api")
	want := []SSHGrant{{Users: []string{"alice", "bob"}, Logins: []string{"dev"}}, {Users: []string{"carol"}, Logins: []string{"root"}}}
	if diff := cmp.Diff(want, api); diff != "" {
		t.Errorf("grants for api (-want +got):\n%s", diff)
	}
	for _, tt := range []struct {
		grants             []SSHGrant
		user, login, owner string
		want               bool
	}{
		{api, "alice", "dev", "dev", true},
		{api, "alice", "alice", "dev", true}, // any non-root login is the workspace's user
		{api, "alice", "root", "dev", false},
		{api, "carol", "root", "dev", true},
		{api, "carol", "dev", "dev", false},
		{api, "mallory", "dev", "dev", false},
		{p.SSHGrants("web"), "mallory", "root", "dev", true},
		{p.SSHGrants("db"), "alice", "dev", "dev", false},
		{p.SSHGrants("db"), "dave", "dev", "dev", true}, // ws:NAME names the workspace too
		{p.SSHGrants("db"), "dave", "root", "dev", false},
		{p.SSHGrants("api"), "dave", "dev", "dev", false},
	} {
		if got := Allows(tt.grants, tt.user, tt.login, tt.owner); got != tt.want {
			t.Errorf("Allows(%v, %s as %s) = %v, want %v", tt.grants, tt.user, tt.login, got, tt.want)
		}
	}
}
