package fsm

import (
	"fmt"
	"slices"
)

// Connect is the payload of workspace.connect: Env "" disconnects.
type Connect struct {
	Workspace string `json:"workspace"`
	Env       string `json:"env"`
}

func workspaceConnect(t *tx) (any, string, error) {
	var req Connect
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	old := get[Workspace](t, tWorkspaces, "name", req.Workspace)
	if old == nil {
		return nil, "", errorf(CodeNotFound, "no workspace %q", req.Workspace)
	}
	if req.Env != "" && get[Environment](t, tEnvs, "name", req.Env) == nil {
		return nil, "", errorf(CodeNotFound, "no environment %q (see meshctl env list)", req.Env)
	}
	w := *old
	w.Env, w.UpdatedAt = req.Env, t.c.Time
	t.put(tWorkspaces, &w)
	return &w, "workspace/" + w.Name, nil
}

func environmentCreate(t *tx) (any, string, error) {
	var e Environment
	if err := t.decode(&e); err != nil {
		return nil, "", err
	}
	if err := firstErr(ValidName("environment", e.Name), e.checkSizes()); err != nil {
		return nil, "", err
	}
	if get[Environment](t, tEnvs, "name", e.Name) != nil {
		return nil, "", errorf(CodeConflict, "environment %q already exists", e.Name)
	}
	if e.ID == "" || get[Environment](t, tEnvs, "id", e.ID) != nil {
		return nil, "", errorf(CodeInvalid, "environment %q: missing or duplicate ID", e.Name)
	}
	if get[User](t, tUsers, "id", e.OwnerID) == nil {
		return nil, "", errorf(CodeNotFound, "no user with ID %q", e.OwnerID)
	}
	if err := checkWorkmachine(t, e.Machine); err != nil {
		return nil, "", err
	}
	if err := checkServices(e.Name, e.Services); err != nil {
		return nil, "", err
	}
	e.Services = declared(e.Services)
	if _, err := leaseServices(t, e.Name, e.Services); err != nil {
		return nil, "", err
	}
	e.Desired, e.CreatedAt, e.UpdatedAt, e.Generation = Running, t.c.Time, t.c.Time, t.index
	t.add(tEnvs, &e)
	touchNode(t, e.Machine)
	return &e, "environment/" + e.Name, nil
}

// checkServices checks an environment's service list: at least one, each name a DNS label
// and used once.
func checkServices(env string, svcs []Service) error {
	if len(svcs) == 0 {
		return errorf(CodeInvalid, "environment %q has no services", env)
	}
	seen := map[string]bool{}
	for _, s := range svcs {
		if err := ValidName("service", s.Name); err != nil {
			return err
		}
		if seen[s.Name] {
			return errorf(CodeInvalid, "environment %q: two services named %q", env, s.Name)
		}
		seen[s.Name] = true
	}
	return nil
}

// declared keeps only what a compose file declares of each service: addresses and observed
// state are coord's and the machine's to set, never a request's.
func declared(svcs []Service) []Service {
	out := make([]Service, len(svcs))
	for i, s := range svcs {
		out[i] = Service{Name: s.Name, Image: s.Image, Ports: s.Ports}
	}
	return out
}

// leaseServices gives each service of svcs without addresses a mesh address pair, all or
// none, and says how many it gave.
func leaseServices(t *tx, env string, svcs []Service) (int, error) {
	var owners []string
	var need []int
	for i, s := range svcs {
		if s.IPv4 == "" {
			owners, need = append(owners, serviceOwner(env, s.Name)), append(need, i)
		}
	}
	v4s, v6s, err := allocateAll(t, owners)
	if err != nil {
		return 0, err
	}
	for j, i := range need {
		svcs[i].IPv4, svcs[i].IPv6 = v4s[j].String(), v6s[j].String()
	}
	return len(need), nil
}

// EnvironmentUpdate is the payload of environment.update: a new compose file (sealed), its
// variables (sealed) and the services it declares.
type EnvironmentUpdate struct {
	Name      string    `json:"name"`
	Compose   string    `json:"compose"`
	Variables string    `json:"variables,omitempty"`
	Services  []Service `json:"services"`
}

// environmentUpdate replaces an environment's compose file. A service whose name stays
// keeps its addresses and what was observed of it; a new one gets new addresses; a removed
// one releases its own. Refused while an intercept targets a service or port it would remove.
func environmentUpdate(t *tx) (any, string, error) {
	var req EnvironmentUpdate
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	old := get[Environment](t, tEnvs, "name", req.Name)
	if old == nil {
		return nil, "", errorf(CodeNotFound, "no environment %q", req.Name)
	}
	e := *old
	e.Compose, e.Variables, e.Services, e.UpdatedAt = req.Compose, req.Variables, declared(req.Services), t.c.Time
	e.Generation = t.index
	if err := firstErr(e.checkSizes(), checkServices(e.Name, e.Services)); err != nil {
		return nil, "", err
	}
	removed := removedServices(old, &e)
	if err := interceptsKept(t, &e); err != nil {
		return nil, "", err
	}
	for i := range e.Services {
		if prev := findService(old, e.Services[i].Name); prev != nil {
			keep := *prev
			keep.Image, keep.Ports = e.Services[i].Image, e.Services[i].Ports
			e.Services[i] = keep
		}
	}
	if _, err := leaseServices(t, e.Name, e.Services); err != nil {
		return nil, "", err
	}
	for _, s := range removed {
		release(t, s.IPv4)
	}
	t.put(tEnvs, &e)
	touchNode(t, e.Machine)
	return &e, "environment/" + e.Name, nil
}

// removedServices are the services of old that e no longer has.
func removedServices(old, e *Environment) []Service {
	var out []Service
	for _, s := range old.Services {
		if findService(e, s.Name) == nil {
			out = append(out, s)
		}
	}
	return out
}

// interceptsKept refuses an update of environment e that would take away a service or a
// port an intercept targets.
func interceptsKept(t *tx, e *Environment) error {
	for _, ic := range all[Intercept](t.Txn, tIntercepts, "env", e.Name) {
		svc := findService(e, ic.Service)
		what := ""
		switch {
		case svc == nil:
			what = fmt.Sprintf("service %q would be removed", ic.Service)
		case !slices.Contains(svc.Ports, ic.Port):
			what = fmt.Sprintf("service %q would no longer expose port %d", ic.Service, ic.Port)
		default:
			continue
		}
		return errorf(CodeConflict, "environment %q: %s, but intercept %s (%s) targets it; stop it first (meshctl intercept stop %s)",
			e.Name, what, ic.Ref(), ic.Target, ic.Ref())
	}
	return nil
}

func environmentSet(t *tx) (any, string, error) {
	var req WorkspaceState
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	old := get[Environment](t, tEnvs, "name", req.Name)
	if old == nil {
		return nil, "", errorf(CodeNotFound, "no environment %q", req.Name)
	}
	if req.Desired != Running && req.Desired != Stopped {
		return nil, "", errorf(CodeInvalid, "environment %q: state %q: use running or stopped", req.Name, req.Desired)
	}
	e := *old
	e.Desired, e.UpdatedAt, e.Services = req.Desired, t.c.Time, slices.Clone(old.Services)
	e.Generation = t.index // what runs changes: reports from before it are stale
	// An environment from before services had addresses gets them here.
	leased, err := leaseServices(t, e.Name, e.Services)
	if err != nil {
		return nil, "", err
	}
	t.put(tEnvs, &e)
	if leased > 0 {
		touchNode(t, e.Machine)
	}
	return &e, "environment/" + e.Name, nil
}

func environmentDelete(t *tx) (any, string, error) {
	var req ByName
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	e := get[Environment](t, tEnvs, "name", req.Name)
	if e == nil {
		return nil, "", errorf(CodeNotFound, "no environment %q", req.Name)
	}
	endIntercepts(t, all[Intercept](t.Txn, tIntercepts, "env", e.Name))
	for _, w := range all[Workspace](t.Txn, tWorkspaces, "env", e.Name) {
		c := *w
		c.Env, c.UpdatedAt = "", t.c.Time
		t.put(tWorkspaces, &c)
	}
	for _, s := range e.Services {
		release(t, s.IPv4)
	}
	t.del(tEnvs, e)
	touchNode(t, e.Machine)
	return nil, "environment/" + e.Name, nil
}

func findService(e *Environment, name string) *Service {
	for i := range e.Services {
		if e.Services[i].Name == name {
			return &e.Services[i]
		}
	}
	return nil
}

func serviceNames(e *Environment) string {
	s := ""
	for i, svc := range e.Services {
		if i > 0 {
			s += ", "
		}
		s += svc.Name
	}
	return s
}

func validPort(what string, p int) error {
	if p < 1 || p > 65535 {
		return errorf(CodeInvalid, "%s %d: want 1 to 65535", what, p)
	}
	return nil
}
