package fsm

import (
	"slices"
	"strings"
)

// EnvironmentStatus is the payload of environment.status: what the agent on Machine
// observed of environment Env's services.
type EnvironmentStatus struct {
	Env      string          `json:"env"`
	Machine  string          `json:"machine"`
	Services []ServiceStatus `json:"services"`
}

// ServiceStatus is one service's observed state.
type ServiceStatus struct {
	Name         string `json:"name"`
	State        string `json:"state"`
	Health       string `json:"health,omitempty"`
	HealthOutput string `json:"health_output,omitempty"`
	Restarts     int    `json:"restarts,omitempty"`
	ExitCode     int    `json:"exit_code,omitempty"`
	Reason       string `json:"reason,omitempty"`
	Generation   uint64 `json:"generation,omitempty"`
}

// Observed states and health of a service, as agents report them (api.Service*, api.Health*).
var (
	serviceStates = []string{"pending", "pulling", "starting", "running", "restarting", "exited", "stopped", "failed"}
	serviceHealth = []string{"", "starting", "healthy", "unhealthy"}
)

// maxHealthOutput bounds a healthcheck's reported output.
const maxHealthOutput = 1024

func environmentStatus(t *tx) (any, string, error) {
	var req EnvironmentStatus
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	old := get[Environment](t, tEnvs, "name", req.Env)
	if old == nil {
		return nil, "", errorf(CodeNotFound, "no environment %q", req.Env)
	}
	if old.Machine != req.Machine {
		return nil, "", errorf(CodeForbidden, "environment %q is on machine %q, not %q", req.Env, old.Machine, req.Machine)
	}
	e := *old
	e.Services = slices.Clone(old.Services)
	for _, st := range req.Services {
		if err := st.check(old); err != nil {
			return nil, "", err
		}
		s := findService(&e, st.Name)
		if st.observed() != observedOf(s) {
			st.apply(s, t)
		}
	}
	t.put(tEnvs, &e)
	return &e, "environment/" + e.Name, nil
}

func (st *ServiceStatus) check(e *Environment) error {
	switch {
	case findService(e, st.Name) == nil:
		return errorf(CodeNotFound, "environment %q has no service %q", e.Name, st.Name)
	case !slices.Contains(serviceStates, st.State):
		return errorf(CodeInvalid, "service %s.%s: state %q: use one of %s", st.Name, e.Name, st.State, strings.Join(serviceStates, ", "))
	case !slices.Contains(serviceHealth, st.Health):
		return errorf(CodeInvalid, "service %s.%s: health %q: use starting, healthy, unhealthy or none", st.Name, e.Name, st.Health)
	case st.Restarts < 0:
		return errorf(CodeInvalid, "service %s.%s: %d restarts", st.Name, e.Name, st.Restarts)
	}
	st.HealthOutput, st.Reason = cut(st.HealthOutput, maxHealthOutput), cut(st.Reason, maxReason)
	return nil
}

// observed is the status without its name: what is compared with the stored service.
func (st *ServiceStatus) observed() ServiceStatus {
	o := *st
	o.Name = ""
	return o
}

func observedOf(s *Service) ServiceStatus {
	return ServiceStatus{State: s.State, Health: s.Health, HealthOutput: s.HealthOutput,
		Restarts: s.Restarts, ExitCode: s.ExitCode, Reason: s.Reason, Generation: s.Generation}
}

func (st *ServiceStatus) apply(s *Service, t *tx) {
	s.State, s.Health, s.HealthOutput, s.Restarts, s.ExitCode, s.Reason, s.Generation, s.StateAt =
		st.State, st.Health, st.HealthOutput, st.Restarts, st.ExitCode, st.Reason, st.Generation, t.c.Time
}

// Holds reports whether s already holds what st reports (as environment.status would
// store it): a report that would change nothing need not be written.
func (s *Service) Holds(st ServiceStatus) bool {
	st.HealthOutput, st.Reason = cut(st.HealthOutput, maxHealthOutput), cut(st.Reason, maxReason)
	return st.observed() == observedOf(s)
}
