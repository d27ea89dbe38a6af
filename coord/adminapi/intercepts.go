package adminapi

import (
	"net/http"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
)

func apiIntercept(i *fsm.Intercept, owner string) api.Intercept {
	out := api.Intercept{ID: i.ID, Name: i.Name, Env: i.Env, Service: i.Service, Port: i.Port, Workspace: i.Workspace,
		WorkspacePort: i.WorkspacePort, Mode: i.Mode(), Owner: owner, CreatedAt: i.CreatedAt,
		State: i.State, Reason: i.Reason, Connections: i.Connections, Requests: i.Requests, StateAt: i.StateAt}
	for _, h := range i.Headers {
		out.Headers = append(out.Headers, api.HeaderMatch(h))
	}
	return out
}

// inWorkspace is the workspace whose own API serves the request ("": the admin API).
func inWorkspace(r *http.Request) string {
	name, _ := r.Context().Value(workspaceKey{}).(string)
	return name
}

// createIntercept starts an intercept. Intercepting a service needs rights on its
// environment (its owner, or an admin: 403 otherwise, as env connect); sending traffic to a
// workspace needs to be its owner or an admin (404 otherwise, as other workspace routes).
// Inside a workspace, the target is that workspace.
func (s *Server) createIntercept(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.CreateIntercept
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := interceptTarget(r, &req); err != nil {
		return err
	}
	store, err := s.read(r)
	if err != nil {
		return err
	}
	if err := mayIntercept(store, c, req.Env, req.Workspace); err != nil {
		return err
	}
	hs := make([]fsm.HeaderMatch, len(req.Headers))
	for i, h := range req.Headers {
		hs[i] = fsm.HeaderMatch(h)
	}
	if _, err := fsm.CanonicalHeaders(hs); err != nil {
		return err
	}
	ic := fsm.Intercept{ID: keys.New("i").ID, Name: req.Name, Env: req.Env, Service: req.Service, Port: req.Port,
		Workspace: req.Workspace, WorkspacePort: req.WorkspacePort, Headers: hs, OwnerID: c.user.ID}
	if err := s.apply(r, c, "intercept.create", ic, &ic); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apiIntercept(&ic, c.user.Name))
	return nil
}

// interceptTarget fills in or checks the workspace a request inside a workspace names.
func interceptTarget(r *http.Request, req *api.CreateIntercept) error {
	ws := inWorkspace(r)
	switch {
	case ws != "" && req.Workspace == "":
		req.Workspace = ws
	case ws != "" && req.Workspace != ws:
		return forbidden("inside workspace %s, intercepts send traffic to %s only: give --to :PORT, or run meshctl with an API key from outside to target %s", ws, ws, req.Workspace)
	case req.Workspace == "":
		return invalid("name the workspace that receives the traffic (meshctl intercept start ENV/SVC:PORT --to WS:PORT)")
	}
	return nil
}

// mayIntercept checks that the caller may intercept environment env's services (403 as env
// connect) and send traffic to workspace ws (404 unless hers).
func mayIntercept(store *fsm.Store, c *caller, env, ws string) error {
	e := store.Environment(env)
	switch {
	case e == nil:
		return notFound("no environment %q (see meshctl env list)", env)
	case !c.admin() && e.OwnerID != c.user.ID:
		return forbidden("environment %q is not yours: only its owner or an admin may intercept its services; ask them, or create your own (meshctl env create)", env)
	}
	if w := store.Workspace(ws); w == nil || (!c.admin() && w.OwnerID != c.user.ID) {
		return notFound("no workspace %q of yours: an intercept sends traffic only to a workspace you own (see meshctl ws list)", ws)
	}
	return nil
}

// seesIntercept reports whether the caller may see and stop intercept ic: admins, its
// owner, the owner of the workspace it sends traffic to and the owner of the environment it
// intercepts. Inside a workspace: only the intercepts sending traffic to it.
func seesIntercept(store *fsm.Store, r *http.Request, c *caller, ic *fsm.Intercept) bool {
	if ws := inWorkspace(r); ws != "" {
		return ic.Workspace == ws
	}
	if c.admin() || ic.OwnerID == c.user.ID {
		return true
	}
	if w := store.Workspace(ic.Workspace); w != nil && w.OwnerID == c.user.ID {
		return true
	}
	e := store.Environment(ic.Env)
	return e != nil && e.OwnerID == c.user.ID
}

func (s *Server) listIntercepts(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.watchRead(w, r, fsm.TableIntercepts)
	if err != nil {
		return err
	}
	out := []api.Intercept{}
	for _, ic := range store.Intercepts("") {
		if seesIntercept(store, r, c, ic) {
			out = append(out, apiIntercept(ic, userName(store, ic.OwnerID)))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// intercept finds the intercept the path names by ID or name, if the caller sees it.
func (s *Server) intercept(r *http.Request, c *caller) (*fsm.Store, *fsm.Intercept, error) {
	store, err := s.read(r)
	if err != nil {
		return nil, nil, err
	}
	ref := r.PathValue("id")
	ic := store.Intercept(ref)
	if ic == nil || !seesIntercept(store, r, c, ic) {
		return nil, nil, notFound("no intercept %q (see meshctl intercept list)", ref)
	}
	return store, ic, nil
}

func (s *Server) getIntercept(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, ic, err := s.intercept(r, c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiIntercept(ic, userName(store, ic.OwnerID)))
	return nil
}

func (s *Server) deleteIntercept(w http.ResponseWriter, r *http.Request, c *caller) error {
	_, ic, err := s.intercept(r, c)
	if err != nil {
		return err
	}
	if err := s.apply(r, c, "intercept.delete", fsm.ByID{ID: ic.ID}, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
