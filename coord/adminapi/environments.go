package adminapi

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
	"meshwork.dev/coord/secret"
	"meshwork.dev/overlay/meshdns"
	"meshwork.dev/workspace/compose"
)

// maxCompose bounds a compose file.
const maxCompose = 256 << 10

// OpenCompose decrypts an environment's stored compose file.
func OpenCompose(k *secret.Key, e *fsm.Environment) ([]byte, error) {
	sealed, err := base64.StdEncoding.DecodeString(e.Compose)
	if err != nil {
		return nil, err
	}
	return k.Open(sealed, []byte(secret.ComposeAAD(e.Name)))
}

func (s *Server) apiEnvironment(e *fsm.Environment, owner string) api.Environment {
	out := api.Environment{ID: e.ID, Name: e.Name, Owner: owner, Machine: e.Machine, Desired: e.Desired,
		Generation: e.Generation, Services: []api.Service{}, CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt}
	for _, svc := range e.Services {
		out.Services = append(out.Services, api.Service{Name: svc.Name, Image: svc.Image, Ports: svc.Ports,
			IPv4: svc.IPv4, IPv6: svc.IPv6, DNSName: meshdns.ServiceName(svc.Name, e.Name, s.domain()),
			State: svc.State, Health: svc.Health, HealthOutput: svc.HealthOutput, Restarts: svc.Restarts,
			ExitCode: svc.ExitCode, Reason: svc.Reason, StateAt: svc.StateAt, Generation: svc.Generation})
	}
	return out
}

// sealedEnvironment is a compose file and its variables checked and sealed for the log.
type sealedEnvironment struct {
	compose, variables string
	services           []fsm.Service
}

// sealEnvironment checks environment env's compose file and the variables its secrets and
// configs take, and seals both for the log. how is the command that sends them
// ("meshctl env create"), for the fix an error names.
func (s *Server) sealEnvironment(env, how, text string, vars map[string]string) (*sealedEnvironment, error) {
	if len(text) > maxCompose {
		return nil, apiErr(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "compose file over %d bytes", maxCompose)
	}
	if err := checkVariableSizes(vars); err != nil {
		return nil, err
	}
	p, err := compose.Load(env, []byte(text))
	if err != nil {
		return nil, invalid("environment %q: %v", env, err)
	}
	if err := checkVariables(p, vars, how); err != nil {
		return nil, err
	}
	if s.Secrets == nil {
		return nil, apiErr(http.StatusServiceUnavailable, api.CodeUnavailable,
			"coord has no secret key to encrypt compose files at rest: start every replica with the same --secret-key-file FILE")
	}
	out := &sealedEnvironment{compose: base64.StdEncoding.EncodeToString(s.Secrets.Seal([]byte(text), []byte(secret.ComposeAAD(env))))}
	if len(vars) > 0 {
		b, err := json.Marshal(vars)
		if err != nil {
			return nil, err
		}
		out.variables = base64.StdEncoding.EncodeToString(s.Secrets.Seal(b, []byte(secret.VariablesAAD(env))))
	}
	for _, svc := range p.Services {
		out.services = append(out.services, fsm.Service{Name: svc.Name, Image: svc.Image, Ports: slices.Clone(svc.Ports)})
	}
	return out, nil
}

func (s *Server) createEnvironment(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.CreateEnvironment
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := fsm.ValidName("environment", req.Name); err != nil {
		return err
	}
	sealed, err := s.sealEnvironment(req.Name, "meshctl env create", req.Compose, req.Variables)
	if err != nil {
		return err
	}
	owner, err := s.owner(r, c, req.Owner)
	if err != nil {
		return err
	}
	e := fsm.Environment{ID: keys.New("e").ID, Name: req.Name, OwnerID: owner.ID, Machine: req.Machine,
		Compose: sealed.compose, Variables: sealed.variables, Services: sealed.services}
	if err := s.apply(r, c, "environment.create", e, &e); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, s.apiEnvironment(&e, owner.Name))
	return nil
}

// updateEnvironment replaces an environment's compose file and variables.
func (s *Server) updateEnvironment(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.UpdateEnvironment
	if err := decode(w, r, &req); err != nil {
		return err
	}
	store, e, err := s.ownEnvironment(r, c)
	if err != nil {
		return err
	}
	sealed, err := s.sealEnvironment(e.Name, "meshctl env update", req.Compose, req.Variables)
	if err != nil {
		return err
	}
	var out fsm.Environment
	up := fsm.EnvironmentUpdate{Name: e.Name, Compose: sealed.compose, Variables: sealed.variables, Services: sealed.services}
	if err := s.apply(r, c, "environment.update", up, &out); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.apiEnvironment(&out, userName(store, out.OwnerID)))
	return nil
}

func (s *Server) listEnvironments(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.watchRead(w, r, fsm.TableEnvironments)
	if err != nil {
		return err
	}
	out := []api.Environment{}
	for _, e := range store.Environments(visible(c)) {
		out = append(out, s.apiEnvironment(e, userName(store, e.OwnerID)))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// ownEnvironment finds the named environment if the caller may see it.
func (s *Server) ownEnvironment(r *http.Request, c *caller) (*fsm.Store, *fsm.Environment, error) {
	store, err := s.read(r)
	if err != nil {
		return nil, nil, err
	}
	e := store.Environment(r.PathValue("name"))
	if e == nil || (!c.admin() && e.OwnerID != c.user.ID) {
		return nil, nil, notFound("no environment %q", r.PathValue("name"))
	}
	return store, e, nil
}

func (s *Server) getEnvironment(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, e, err := s.ownEnvironment(r, c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.apiEnvironment(e, userName(store, e.OwnerID)))
	return nil
}

func (s *Server) upEnvironment(w http.ResponseWriter, r *http.Request, c *caller) error {
	return s.setEnvironment(w, r, c, fsm.Running)
}

func (s *Server) downEnvironment(w http.ResponseWriter, r *http.Request, c *caller) error {
	return s.setEnvironment(w, r, c, fsm.Stopped)
}

func (s *Server) setEnvironment(w http.ResponseWriter, r *http.Request, c *caller, desired string) error {
	store, e, err := s.ownEnvironment(r, c)
	if err != nil {
		return err
	}
	var out fsm.Environment
	if err := s.apply(r, c, "environment.set", fsm.WorkspaceState{Name: e.Name, Desired: desired}, &out); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.apiEnvironment(&out, userName(store, out.OwnerID)))
	return nil
}

func (s *Server) deleteEnvironment(w http.ResponseWriter, r *http.Request, c *caller) error {
	_, e, err := s.ownEnvironment(r, c)
	if err != nil {
		return err
	}
	if err := s.apply(r, c, "environment.delete", fsm.ByName{Name: e.Name}, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
