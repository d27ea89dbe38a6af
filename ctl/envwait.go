package ctl

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"meshwork.dev/coord/api"
)

// envWait is one wait for an environment's services: until every one is ready (up) or
// stopped (down), or until one fails.
type envWait struct {
	name    string
	up      bool // ready, else stopped
	timeout time.Duration
	// gen is the environment's generation the command made (api.Environment.Generation): a
	// service's state counts only once its machine observed it under gen or a later one
	// (before, it is the answer to an older create, update, up or down).
	gen uint64

	// get reads the environment; nil: GET it from coord. every is how often; 0: 100 ms.
	get   func(ctx context.Context) (api.Environment, error)
	every time.Duration

	shown map[string]string // each service's last progress line
}

// waitEnvironment follows an environment until w is done, printing each service's progress
// once per change, and at the end how to reach it.
func (e *env) waitEnvironment(ctx context.Context, w *envWait) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	if w.get == nil {
		w.get = func(ctx context.Context) (api.Environment, error) { return e.getEnvironment(ctx, w.name) }
	}
	var env api.Environment
	for {
		got, err := w.get(ctx)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if err == nil {
			env = got
			if !e.global.json {
				w.show(e, env)
			}
			if err := w.failed(env); err != nil {
				return err
			}
			if w.done(env) {
				return e.arrived(env, w.up)
			}
		}
		select {
		case <-ctx.Done():
			return w.late(env)
		case <-time.After(cmp.Or(w.every, 100*time.Millisecond)):
		}
	}
}

// show prints the progress of each service whose progress changed.
func (w *envWait) show(e *env, env api.Environment) {
	if w.shown == nil {
		w.shown = map[string]string{}
	}
	for _, s := range env.Services {
		line := progress(s)
		switch {
		case s.State != "" && !w.fresh(env, s):
			line = "changing"
		case w.up && s.State == api.ServiceFailed:
			continue // the error says it
		}
		if w.shown[s.Name] != line {
			w.shown[s.Name] = line
			e.printf("  %s: %s\n", s.Name, line)
		}
	}
}

// progress is how far a service has come, in a few words.
func progress(s api.Service) string {
	switch s.State {
	case "":
		return "waiting for its machine"
	case api.ServicePulling:
		if s.Reason != "" {
			return "pulling (" + firstLine(s.Reason, 60) + ")"
		}
		return "pulling"
	case api.ServiceRunning:
		switch s.Health {
		case "":
			return "running"
		case api.HealthHealthy:
			return "healthy"
		case api.HealthUnhealthy:
			return "unhealthy: " + firstLine(s.HealthOutput, 80)
		}
		return "running, health " + s.Health
	case api.ServiceExited:
		return fmt.Sprintf("exited %d", s.ExitCode)
	case api.ServiceRestarting:
		return fmt.Sprintf("restarting (%d restarts%s)", s.Restarts, reasonSuffix(firstLine(s.Reason, 60)))
	}
	return s.State + reasonSuffix(firstLine(s.Reason, 80))
}

// fresh reports whether s's state answers the latest change of env (see envWait.gen).
func (w *envWait) fresh(env api.Environment, s api.Service) bool {
	return s.Generation >= max(w.gen, env.Generation)
}

// done reports whether every service is where w wants it.
func (w *envWait) done(env api.Environment) bool {
	if len(env.Services) == 0 {
		return false
	}
	for _, s := range env.Services {
		if !w.fresh(env, s) || w.up && !s.Ready() || !w.up && !down(s) {
			return false
		}
	}
	return true
}

// down reports whether nothing of s runs.
func down(s api.Service) bool {
	return s.State == api.ServiceStopped || s.State == api.ServiceExited || s.State == api.ServiceFailed
}

// failed is the error of a wait for up that cannot end well: a service failed, or a job
// exited with an error (a service that restarts passes through restarting instead). Only
// what failed since the latest change counts.
func (w *envWait) failed(env api.Environment) error {
	if !w.up {
		return nil
	}
	var bad []string
	first := ""
	for _, s := range env.Services {
		if !w.fresh(env, s) {
			continue // the latest change may be what mends it
		}
		switch {
		case s.State == api.ServiceFailed:
			bad = append(bad, fmt.Sprintf("service %s failed: %s", s.Name, cmp.Or(s.Reason, "its machine gave no reason")))
		case s.State == api.ServiceExited && s.ExitCode != 0:
			bad = append(bad, fmt.Sprintf("service %s exited with code %d%s", s.Name, s.ExitCode, reasonSuffix(s.Reason)))
		default:
			continue
		}
		if first == "" {
			first = s.Name
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("environment %s: %s; see meshctl env status %s and meshctl env logs %s %s",
		env.Name, strings.Join(bad, "; "), env.Name, env.Name, first)
}

// late is the error of a wait that ran out of time: which services are not there yet.
func (w *envWait) late(env api.Environment) error {
	var behind []string
	for _, s := range env.Services {
		switch {
		case s.State != "" && !w.fresh(env, s):
			behind = append(behind, s.Name+" changing")
		case w.up && !s.Ready() || !w.up && !down(s):
			behind = append(behind, s.Name+" "+progress(s))
		}
	}
	want := "ready"
	if !w.up {
		want = "stopped"
	}
	if len(env.Services) == 0 {
		behind = append(behind, "coord did not answer")
	}
	return fmt.Errorf("environment %s is not %s after %v: %s; meshctl env status %s shows more (is %s's agent running? meshctl node list)",
		w.name, want, w.timeout, strings.Join(behind, ", "), w.name, cmp.Or(env.Machine, "its machine"))
}

// arrived says the environment is up (and how to reach it) or down.
func (e *env) arrived(env api.Environment, up bool) error {
	if e.global.json {
		return e.printJSON(env)
	}
	if !up {
		return e.printf("environment %s is down: containers stopped, volumes and addresses kept (meshctl env up %s brings it back)\n", env.Name, env.Name)
	}
	e.printf("environment %s is ready on %s:\n", env.Name, env.Machine)
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	for _, s := range env.Services {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.Name, cmp.Or(s.DNSName, s.Name+"."+env.Name), cmp.Or(s.IPv4, "-"), portList(s.Ports))
	}
	tw.Flush()
	example := env.Services[0].Name
	for _, s := range env.Services {
		if len(s.Ports) > 0 {
			example = fmt.Sprintf("%s:%d", s.Name, s.Ports[0])
			break
		}
	}
	return e.printf("connect a workspace to reach them by bare name (%s): meshctl env connect WS %s\n", example, env.Name)
}
