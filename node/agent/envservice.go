package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/workspace/compose"
	"meshwork.dev/workspace/ctrd"
)

// svcRunner keeps one service of an environment that is up as its spec says, in a goroutine
// of its own: it waits for what the service depends on, runs it, health-checks it, watches
// it and restarts it by its restart policy.
type svcRunner struct {
	name   string
	svc    Services
	b      *board
	logf   func(format string, args ...any)
	deps   []dep
	job    bool // a service depends on it completing: a one-shot job
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has ended

	mu         sync.Mutex // guards spec and peersStale
	spec       ctrd.ServiceSpec
	peersStale bool // setting spec.Hosts and spec.Allow on the service failed
}

// dep is one dependency of a service: what it waits for.
type dep struct {
	name      string
	cond      compose.Condition
	hasHealth bool // the dependency has a healthcheck
}

// current returns the runner's spec.
func (r *svcRunner) current() ctrd.ServiceSpec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spec
}

// stop ends the runner's goroutine (the container stays as it is) and waits for it.
func (r *svcRunner) stop() {
	r.cancel()
	<-r.done
}

// setPeers replaces, live, whom the service knows by name (its environment's services) and
// who may connect to it; one not made yet gets them when it is (start applies what changed
// while it ran RunService).
func (r *svcRunner) setPeers(ctx context.Context, hosts []ctrd.HostEntry, allow []netip.Prefix) error {
	r.mu.Lock()
	r.spec.Hosts, r.spec.Allow, r.peersStale = hosts, allow, true
	id := r.spec.ID
	r.mu.Unlock()
	if err := r.svc.SetServicePeers(ctx, id, hosts, allow); err != nil && !isNotFound(err) {
		return fmt.Errorf("service %s: setting its peers: %w", r.name, err)
	}
	r.mu.Lock()
	r.peersStale = false
	r.mu.Unlock()
	return nil
}

// needsPeers says whether hosts and allow are not (known to be) what the service has.
func (r *svcRunner) needsPeers(hosts []ctrd.HostEntry, allow []netip.Prefix) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.peersStale || !samePeers(r.spec, hosts, allow)
}

func samePeers(s ctrd.ServiceSpec, hosts []ctrd.HostEntry, allow []netip.Prefix) bool {
	return slices.Equal(s.Allow, allow) && slices.EqualFunc(s.Hosts, hosts, func(a, b ctrd.HostEntry) bool {
		return a.Addr == b.Addr && slices.Equal(a.Names, b.Names)
	})
}

// run serves until ctx ends. found is what an earlier agent left of the service, if anything.
func (r *svcRunner) run(ctx context.Context, found *ctrd.ServiceStatus) {
	defer close(r.done)
	if r.finishedJob(found) {
		r.b.update(r.name, func(s *api.ServiceReport) { s.State, s.ExitCode, s.Reason = api.ServiceExited, 0, "" })
		<-ctx.Done() // an earlier agent saw it through: it does not run again
		return
	}
	adopted := found != nil && found.State == ctrd.StateRunning
	if !adopted && !r.waitDeps(ctx) {
		return
	}
	rs := restartState{policy: r.current().Service.Restart}
	for fails := 0; ctx.Err() == nil; {
		began := time.Now()
		code, err := r.startAndWatch(ctx, adopted)
		adopted = false
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fails++
			r.logf("agent: service %s/%s: %v (again in %v)", r.b.env, r.name, err, backoff(fails).Round(10*time.Millisecond))
			sleep(ctx, backoff(fails))
			continue
		}
		fails = 0
		wait, again := r.exited(&rs, code, time.Since(began))
		if !again {
			<-ctx.Done()
			return
		}
		sleep(ctx, wait)
	}
}

// finishedJob says whether found is a one-shot job that completed before this agent.
func (r *svcRunner) finishedJob(found *ctrd.ServiceStatus) bool {
	p := r.current().Service.Restart.Policy
	return r.job && found != nil && found.State != ctrd.StateRunning && found.ExitCode == 0 && (p == "no" || p == "on-failure")
}

// startAndWatch runs the service and waits until it exits.
func (r *svcRunner) startAndWatch(ctx context.Context, adopted bool) (int, error) {
	if err := r.start(ctx, adopted); err != nil {
		return 0, err
	}
	code, err := r.watch(ctx)
	if err != nil && ctx.Err() == nil {
		r.b.set(r.name, api.ServiceFailed, fmt.Sprintf("watching the service: %v", err))
	}
	return code, err
}

// restartState is what a restart policy counts.
type restartState struct {
	policy   compose.Restart
	restarts int
	delay    restartDelay
}

// exited reports the service's exit after it ran for ran and says whether, and after what
// wait, it runs again.
func (r *svcRunner) exited(rs *restartState, code int, ran time.Duration) (time.Duration, bool) {
	again, why := restartPolicy(rs.policy, code, rs.restarts)
	if !again {
		r.b.update(r.name, func(s *api.ServiceReport) {
			s.State, s.ExitCode, s.Reason, s.Health, s.HealthOutput = api.ServiceExited, code, why, "", ""
		})
		return 0, false
	}
	rs.restarts++
	wait := rs.delay.next(ran)
	r.b.update(r.name, func(s *api.ServiceReport) {
		s.State, s.ExitCode, s.Restarts, s.Health, s.HealthOutput = api.ServiceRestarting, code, rs.restarts, "", ""
		s.Reason = fmt.Sprintf("exited with code %d; restart %d (%s) in %v", code, rs.restarts, rs.policy.Policy, wait)
	})
	return wait, true
}

// start runs the service (an adopted one already runs) and reports it running.
func (r *svcRunner) start(ctx context.Context, adopted bool) error {
	spec := r.current()
	if !adopted {
		progress := func(st ctrd.Status) { r.b.set(r.name, string(st.State), st.Reason) }
		st, err := r.svc.RunService(ctx, spec, progress)
		if err == nil && st.State != ctrd.StateRunning {
			err = fmt.Errorf("the service is %s after starting it (exit code %d)", st.State, st.ExitCode)
		}
		if err != nil {
			if ctx.Err() == nil {
				r.b.set(r.name, api.ServiceFailed, err.Error())
			}
			return err
		}
	}
	if now := r.current(); adopted || !samePeers(now, spec.Hosts, spec.Allow) {
		// Its peers changed while the service started, or while no agent watched it.
		if err := r.svc.SetServicePeers(ctx, spec.ID, now.Hosts, now.Allow); err != nil {
			r.b.set(r.name, api.ServiceFailed, fmt.Sprintf("setting its peers: %v", err))
			return err
		}
	}
	r.b.update(r.name, func(s *api.ServiceReport) {
		s.State, s.Reason, s.HealthOutput, s.Health = api.ServiceRunning, "", "", ""
		if spec.Service.Healthcheck != nil {
			s.Health = api.HealthStarting
		}
	})
	return nil
}

// watch waits for the running service to exit, health-checking it meanwhile.
func (r *svcRunner) watch(ctx context.Context) (int, error) {
	spec := r.current()
	hctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if hc := spec.Service.Healthcheck; hc != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.checkHealth(hctx, spec.ID, hc, time.Now())
		}()
	}
	code, err := r.svc.WaitService(ctx, spec.ID)
	cancel()
	wg.Wait()
	return code, err
}

// waitDeps waits until every dependency meets its condition, reporting the service pending
// (or failed, naming the dependency, while one cannot meet it). false: ctx ended.
func (r *svcRunner) waitDeps(ctx context.Context) bool {
	for {
		svcs, changed := r.b.snapshot()
		state, why := api.ServicePending, ""
		for _, d := range r.deps {
			met, failed := depMet(d, svcs[d.name])
			if met {
				continue
			}
			if failed != "" {
				state, why = api.ServiceFailed, fmt.Sprintf("depends on %s (%s), but %s", d.name, d.cond, failed)
				break
			}
			if why == "" {
				why = fmt.Sprintf("waiting for %s (%s)", d.name, d.cond)
			}
		}
		if why == "" {
			return true
		}
		r.b.update(r.name, func(s *api.ServiceReport) { s.State, s.Reason, s.Health, s.HealthOutput = state, why, "", "" })
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
}

// depMet says whether dependency d, in state s, meets its condition, and if it cannot
// (for now), why.
func depMet(d dep, s api.ServiceReport) (met bool, failed string) {
	switch {
	case s.State == api.ServiceFailed:
		return false, fmt.Sprintf("%s failed: %s", d.name, s.Reason)
	case s.State == api.ServiceExited && s.ExitCode != 0:
		return false, fmt.Sprintf("%s exited with code %d", d.name, s.ExitCode)
	}
	switch d.cond {
	case compose.ServiceHealthy:
		switch {
		case !d.hasHealth:
			return false, fmt.Sprintf("%s has no healthcheck: give it one, or write condition: service_started", d.name)
		case s.State == api.ServiceRunning && s.Health == api.HealthUnhealthy:
			return false, fmt.Sprintf("%s is unhealthy: %s", d.name, s.HealthOutput)
		case s.State == api.ServiceExited:
			return false, fmt.Sprintf("%s exited", d.name)
		}
		return s.State == api.ServiceRunning && s.Health == api.HealthHealthy, ""
	case compose.ServiceCompletedSuccessfully:
		return s.State == api.ServiceExited && s.ExitCode == 0, ""
	default: // service_started
		return s.State == api.ServiceRunning || s.State == api.ServiceExited || s.State == api.ServiceRestarting, ""
	}
}

// depsOf lists what service s waits for.
func depsOf(s compose.Spec, specs map[string]ctrd.ServiceSpec) []dep {
	var out []dep
	for _, name := range slices.Sorted(maps.Keys(s.DependsOn)) {
		out = append(out, dep{name: name, cond: s.DependsOn[name], hasHealth: specs[name].Service.Healthcheck != nil})
	}
	return out
}

// isJob says whether another service waits for svc to complete.
func isJob(svc string, specs map[string]ctrd.ServiceSpec) bool {
	for _, s := range specs {
		if s.Service.DependsOn[svc] == compose.ServiceCompletedSuccessfully {
			return true
		}
	}
	return false
}

// restartPolicy says whether a service that exited with code after restarts restarts
// again; when not, why (empty for a clean exit).
func restartPolicy(p compose.Restart, code, restarts int) (bool, string) {
	switch p.Policy {
	case "always", "unless-stopped": // a service stopped by hand is the environment going down: no difference here
		return true, ""
	case "on-failure":
		if code == 0 {
			return false, ""
		}
		if p.MaxRetries > 0 && restarts >= p.MaxRetries {
			return false, fmt.Sprintf("exited with code %d after %d restarts (on-failure:%d)", code, restarts, p.MaxRetries)
		}
		return true, ""
	}
	if code != 0 {
		return false, fmt.Sprintf("exited with code %d", code)
	}
	return false, ""
}

// restartDelay is docker's wait before a restart: 100 ms, doubling up to a minute, back to
// 100 ms once the service ran 10 s.
type restartDelay struct{ d time.Duration }

func (r *restartDelay) next(ran time.Duration) time.Duration {
	if r.d == 0 || ran >= 10*time.Second {
		r.d = 100 * time.Millisecond
	} else {
		r.d = min(2*r.d, time.Minute)
	}
	return r.d
}

// isNotFound reports an error of the runtime's for what it does not have.
func isNotFound(err error) bool { return errors.Is(err, ctrd.ErrNotFound) }
