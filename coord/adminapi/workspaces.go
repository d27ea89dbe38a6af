package adminapi

import (
	"math"
	"net/http"
	"strconv"
	"strings"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
)

func apiWorkspace(w *fsm.Workspace, owner string) api.Workspace {
	return api.Workspace{ID: w.ID, Name: w.Name, Owner: owner, Machine: w.Machine, Image: w.Image,
		CPU: w.CPU, Memory: w.MemoryBytes, Desired: w.Desired, Env: w.Env,
		IPv4: w.IPv4, IPv6: w.IPv6, State: w.State, Reason: w.Reason, HostKey: w.HostKey,
		Exit: w.Exit, EgressState: w.EgressState, EgressReason: w.EgressReason, CreatedAt: w.CreatedAt}
}

// parseMemory reads "512m", "2g", "1.5G" or a number of bytes, up to fsm.MaxMemory.
func parseMemory(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := map[byte]float64{'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30, 't': 1 << 40}
	num, m := strings.TrimSuffix(strings.ToLower(s), "b"), 1.0
	if f, ok := mult[lastByte(num)]; ok {
		num, m = num[:len(num)-1], f
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || !(v > 0) || math.IsInf(v, 0) {
		return 0, invalid("memory %q: write a size such as 512m or 2g", s)
	}
	if v*m > fsm.MaxMemory {
		return 0, invalid("memory %q: over the limit of 16t", s)
	}
	return int64(v * m), nil
}

func lastByte(s string) byte {
	if s == "" {
		return 0
	}
	return s[len(s)-1]
}

func (s *Server) createWorkspace(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.CreateWorkspace
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := fsm.ValidName("workspace", req.Name); err != nil {
		return err
	}
	mem, err := parseMemory(req.Memory)
	if err != nil {
		return err
	}
	owner, err := s.owner(r, c, req.Owner)
	if err != nil {
		return err
	}
	ws := fsm.Workspace{ID: keys.New("w").ID, Name: req.Name, OwnerID: owner.ID, Machine: req.Machine,
		Image: req.Image, CPU: req.CPU, MemoryBytes: mem, Desired: fsm.Running, Exit: req.Exit}
	if err := s.apply(r, c, "workspace.create", ws, &ws); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apiWorkspace(&ws, owner.Name))
	return nil
}

func (s *Server) listWorkspaces(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.watchRead(w, r, fsm.TableWorkspaces)
	if err != nil {
		return err
	}
	out := []api.Workspace{}
	for _, ws := range store.Workspaces(visible(c)) {
		out = append(out, apiWorkspace(ws, userName(store, ws.OwnerID)))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// ownWorkspace finds the named workspace if the caller may see it.
func (s *Server) ownWorkspace(r *http.Request, c *caller) (*fsm.Store, *fsm.Workspace, error) {
	store, err := s.read(r)
	if err != nil {
		return nil, nil, err
	}
	ws := store.Workspace(r.PathValue("name"))
	if ws == nil || (!c.admin() && ws.OwnerID != c.user.ID) {
		return nil, nil, notFound("no workspace %q", r.PathValue("name"))
	}
	return store, ws, nil
}

func (s *Server) getWorkspace(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, ws, err := s.ownWorkspace(r, c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiWorkspace(ws, userName(store, ws.OwnerID)))
	return nil
}

func (s *Server) startWorkspace(w http.ResponseWriter, r *http.Request, c *caller) error {
	return s.setWorkspace(w, r, c, fsm.Running)
}

func (s *Server) stopWorkspace(w http.ResponseWriter, r *http.Request, c *caller) error {
	return s.setWorkspace(w, r, c, fsm.Stopped)
}

func (s *Server) setWorkspace(w http.ResponseWriter, r *http.Request, c *caller, desired string) error {
	store, ws, err := s.ownWorkspace(r, c)
	if err != nil {
		return err
	}
	var out fsm.Workspace
	if err := s.apply(r, c, "workspace.set", fsm.WorkspaceState{Name: ws.Name, Desired: desired}, &out); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiWorkspace(&out, userName(store, out.OwnerID)))
	return nil
}

func (s *Server) deleteWorkspace(w http.ResponseWriter, r *http.Request, c *caller) error {
	_, ws, err := s.ownWorkspace(r, c)
	if err != nil {
		return err
	}
	if err := s.apply(r, c, "workspace.delete", fsm.ByName{Name: ws.Name}, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) connectWorkspace(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.Connect
	if err := decode(w, r, &req); err != nil {
		return err
	}
	store, ws, err := s.ownWorkspace(r, c)
	if err != nil {
		return err
	}
	if err := mayUse(store, c, req.Env); err != nil {
		return err
	}
	var out fsm.Workspace
	if err := s.apply(r, c, "workspace.connect", fsm.Connect{Workspace: ws.Name, Env: req.Env}, &out); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiWorkspace(&out, userName(store, out.OwnerID)))
	return nil
}

// mayUse checks that the caller may connect a workspace to environment env ("" disconnects):
// it must exist (404) and be the caller's, or the caller an admin (403).
func mayUse(store *fsm.Store, c *caller, env string) error {
	if env == "" {
		return nil
	}
	e := store.Environment(env)
	switch {
	case e == nil:
		return notFound("no environment %q (see meshctl env list)", env)
	case !c.admin() && e.OwnerID != c.user.ID:
		return forbidden("environment %q is not yours: only its owner or an admin may connect a workspace to it; ask them, or create your own (meshctl env create)", env)
	}
	return nil
}
