package control

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"tailscale.com/types/key"

	"meshwork.dev/coord/fsm"
)

// TestWorkspaceAPIOnlyFromItsMachine: a workspace's own API is relayed to coord by the
// machine hosting it; another machine (even a workmachine) asking in its name is refused
// before coord answers anything, and the path reaches the admin API without the prefix.
func TestWorkspaceAPIOnlyFromItsMachine(t *testing.T) {
	l := &local{f: fsm.New(t.Logf)}
	l.must(t, "cluster.init", fsm.ClusterInit{ULA: "fd00:1:2::/48"})
	l.must(t, "user.create", fsm.User{ID: "u", Name: "u", Role: fsm.RoleAdmin})
	wm1, wm2 := key.NewMachine().Public(), key.NewMachine().Public()
	for i, mk := range []key.MachinePublic{wm1, wm2} {
		name := []string{"wm1", "wm2"}[i]
		l.must(t, "node.register", fsm.Node{ID: "n-" + name, Name: name, UserID: "u", MachineKey: mk.String(),
			NodeKey: key.NewNode().Public().String(), Tags: []string{fsm.WorkmachineTag}})
	}
	l.must(t, "workspace.create", fsm.Workspace{ID: "w1", Name: "dev", OwnerID: "u", Machine: "wm1", Image: "img"})
	var got []string
	s := &Server{Backend: l, WorkspaceAPI: func(w http.ResponseWriter, r *http.Request, name string) {
		got = append(got, name+" "+r.URL.Path)
	}}
	ask := func(mk key.MachinePublic, path string) int {
		w := httptest.NewRecorder()
		s.serveWorkspaceAPI(w, httptest.NewRequest("GET", path, nil), mk)
		return w.Code
	}
	if code := ask(wm2, "/machine/meshwork/workspace/dev/v1/environments/shop"); code != http.StatusForbidden {
		t.Errorf("wm2 asking as dev (on wm1): %d, want 403", code)
	}
	if code := ask(key.NewMachine().Public(), "/machine/meshwork/workspace/dev/v1/workspaces"); code != http.StatusForbidden {
		t.Errorf("an unknown machine asking as dev: %d, want 403", code)
	}
	if code := ask(wm1, "/machine/meshwork/workspace/nosuch/v1/workspaces"); code != http.StatusForbidden {
		t.Errorf("wm1 asking as a workspace that does not exist: %d, want 403", code)
	}
	if len(got) != 0 {
		t.Fatalf("refused requests reached the admin API: %q", got)
	}
	ask(wm1, "/machine/meshwork/workspace/dev/v1/environments/shop")
	if len(got) != 1 || got[0] != "dev /v1/environments/shop" {
		t.Errorf("wm1 asking as dev reached the admin API as %q, want [dev /v1/environments/shop]", got)
	}
}
