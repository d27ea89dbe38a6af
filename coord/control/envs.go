package control

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"meshwork.dev/coord/adminapi"
	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
)

// environmentSpecs are the environments wanted on machine name, their compose files and
// variables opened for it alone (only its Noise channel carries them).
func (s *Server) environmentSpecs(store *fsm.Store, name string) ([]api.EnvironmentSpec, error) {
	out := []api.EnvironmentSpec{}
	for _, e := range store.EnvironmentsOn(name) {
		spec, err := s.environmentSpec(store, e)
		if err != nil {
			return nil, err
		}
		out = append(out, spec)
	}
	return out, nil
}

func (s *Server) environmentSpec(store *fsm.Store, e *fsm.Environment) (api.EnvironmentSpec, error) {
	spec := api.EnvironmentSpec{ID: e.ID, Name: e.Name, Desired: e.Desired, Generation: e.Generation,
		Services: []api.ServiceAddr{}, Allow: []string{}}
	if s.Secrets == nil {
		return spec, fmt.Errorf("environment %q: coord has no secret key to open its compose file: start every replica with the same --secret-key-file FILE", e.Name)
	}
	compose, err := adminapi.OpenCompose(s.Secrets, e)
	if err != nil {
		return spec, fmt.Errorf("environment %q: its compose file does not open with this replica's secret key (%v): start every replica with the same --secret-key-file", e.Name, err)
	}
	vars, err := adminapi.OpenVariables(s.Secrets, e)
	if err != nil {
		return spec, fmt.Errorf("environment %q: its variables do not open with this replica's secret key (%v): start every replica with the same --secret-key-file", e.Name, err)
	}
	spec.Compose, spec.Variables = string(compose), vars
	if u := store.User(e.OwnerID); u != nil {
		spec.User = u.Name
	}
	for _, svc := range e.Services {
		spec.Services = append(spec.Services, api.ServiceAddr{Name: svc.Name, IPv4: svc.IPv4, IPv6: svc.IPv6})
	}
	for _, a := range allowed(store, e) {
		spec.Allow = append(spec.Allow, a.String())
	}
	return spec, nil
}

// allowed are the addresses besides its own services' that may reach environment e's
// services: its connected workspaces' (wherever they run), and the machines of its owner
// and of the admins. A user's machines are the untagged ones they own, as policy reads
// "alice": tagged machines (workmachines) belong to their tags. Sorted, each once.
func allowed(store *fsm.Store, e *fsm.Environment) []netip.Addr {
	var out []netip.Addr
	for _, w := range store.WorkspacesConnected(e.Name) {
		out = append(out, addrs(w.IPv4, w.IPv6)...)
	}
	for _, u := range store.Users() {
		if u.ID != e.OwnerID && u.Role != fsm.RoleAdmin {
			continue
		}
		for _, n := range store.Nodes(u.ID) {
			if len(n.Tags) == 0 {
				out = append(out, addrs(n.IPv4, n.IPv6)...)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// serviceAddrs are the mesh addresses of environment e's services.
func serviceAddrs(e *fsm.Environment) []netip.Addr {
	var out []netip.Addr
	for _, svc := range e.Services {
		out = append(out, addrs(svc.IPv4, svc.IPv6)...)
	}
	return out
}

// addrs parses each address that parses.
func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// recordServices records what machine n reports of its environments' services: one
// environment.status per environment whose report differs from what is stored. A report
// on an environment or service unknown here, or not this machine's, is dropped with a log.
func (s *Server) recordServices(ctx context.Context, store *fsm.Store, n *fsm.Node, reps []api.ServiceReport) {
	byEnv := map[string][]fsm.ServiceStatus{}
	var order []string
	for _, rep := range reps {
		if _, ok := byEnv[rep.Env]; !ok {
			order = append(order, rep.Env)
		}
		byEnv[rep.Env] = append(byEnv[rep.Env], fsm.ServiceStatus{Name: rep.Name, State: rep.State, Health: rep.Health,
			HealthOutput: rep.HealthOutput, Restarts: rep.Restarts, ExitCode: rep.ExitCode, Reason: rep.Reason,
			Generation: rep.Generation})
	}
	for _, env := range order {
		e := store.Environment(env)
		if e == nil {
			s.logf("control: report from %s on environment %q: no such environment", n.Name, env)
			continue
		}
		sts := s.knownServices(n, e, byEnv[env])
		if len(sts) == 0 {
			continue
		}
		err := s.apply(ctx, "environment.status", "node:"+n.Name, "", fsm.EnvironmentStatus{Env: env, Machine: n.Name, Services: sts})
		if err != nil {
			s.logf("control: report from %s on environment %q: %v", n.Name, env, err)
		}
	}
}

// knownServices are the reports of sts on services e has whose state differs from what is
// stored; the others are dropped (unknown ones with a log).
func (s *Server) knownServices(n *fsm.Node, e *fsm.Environment, sts []fsm.ServiceStatus) []fsm.ServiceStatus {
	var out []fsm.ServiceStatus
	for _, st := range sts {
		i := slices.IndexFunc(e.Services, func(svc fsm.Service) bool { return svc.Name == st.Name })
		switch {
		case i < 0:
			s.logf("control: report from %s on %s.%s: environment %q has no such service", n.Name, st.Name, e.Name, e.Name)
		case !e.Services[i].Holds(st):
			out = append(out, st)
		}
	}
	return out
}
