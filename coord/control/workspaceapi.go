package control

import (
	"fmt"
	"net/http"
	"strings"

	"tailscale.com/types/key"
)

// workspaceAPIPrefix is where a machine relays its workspaces' own API: a request to
// /machine/meshwork/workspace/NAME/v1/... is one that workspace NAME's processes made.
const workspaceAPIPrefix = "/machine/meshwork/workspace/"

// serveWorkspaceAPI answers a workspace's own API for the machine that hosts it, and only
// for that machine: the machine's key, proven by the Noise channel, vouches for the
// workspace, and coord answers as its owner (WorkspaceAPI).
func (s *Server) serveWorkspaceAPI(w http.ResponseWriter, r *http.Request, mk key.MachinePublic) {
	store, n := s.machine(w, r, mk)
	if n == nil {
		return
	}
	name, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, workspaceAPIPrefix), "/")
	if ws := store.Workspace(name); ws == nil || ws.Machine != n.Name {
		http.Error(w, fmt.Sprintf("machine %s hosts no workspace %q", n.Name, name), http.StatusForbidden)
		return
	}
	if s.WorkspaceAPI == nil {
		http.Error(w, "this coord serves no workspace API", http.StatusServiceUnavailable)
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath = "/"+rest, ""
	s.WorkspaceAPI(w, r2, name)
}
