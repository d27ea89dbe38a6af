package agent

import (
	"testing"

	"meshwork.dev/coord/api"
	"meshwork.dev/node/sshd"
)

func TestSSHAllow(t *testing.T) {
	a := &agent{state: &api.MachineState{Admins: []string{"root"}, Workspaces: []api.WorkspaceSpec{
		{Name: "api", User: "alice", SSH: []api.SSHGrant{{Users: []string{"bob"}, Logins: []string{"alice"}}}},
		{Name: "db", User: "alice"},
	}}}
	for _, tt := range []struct {
		user, ws, login string
		ok              bool
	}{
		{"alice", "api", "alice", true}, // the owner
		{"alice", "api", "root", true},
		{"root", "db", "root", true},  // an admin
		{"bob", "api", "alice", true}, // granted by the policy
		{"bob", "api", "bob", true},   // any non-root login is the workspace's user
		{"bob", "api", "root", false}, // not as root
		{"bob", "db", "alice", false}, // nothing on db
		{"carol", "api", "alice", false},
		{"alice", "web", "alice", false}, // not on this machine
	} {
		err := a.sshAllow(sshd.Identity{User: tt.user, Node: "laptop"}, tt.ws, tt.login)
		if (err == nil) != tt.ok {
			t.Errorf("%s into %s as %s: %v, want allowed=%v", tt.user, tt.ws, tt.login, err, tt.ok)
		}
	}
}
