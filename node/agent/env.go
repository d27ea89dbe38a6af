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
	"meshwork.dev/workspace/ctrd"
)

// Services runs environment services (workspace/ctrd's service methods) and re-points a
// running workspace's resolver (env connect). The agent runs environments only on a Runtime
// that is also Services.
type Services interface {
	RunService(ctx context.Context, s ctrd.ServiceSpec, progress func(ctrd.Status)) (ctrd.ServiceStatus, error)
	WaitService(ctx context.Context, id string) (exitCode int, err error)
	ExecService(ctx context.Context, id string, argv []string, timeout time.Duration) (code int, output []byte, err error)
	StopService(ctx context.Context, id string) error
	DeleteService(ctx context.Context, id string) error
	DeleteVolumes(ctx context.Context, envID string) error
	ListServices(ctx context.Context) ([]ctrd.ServiceStatus, error)
	SetServicePeers(ctx context.Context, id string, hosts []ctrd.HostEntry, allow []netip.Prefix) error
	ServiceLogPath(id string) string
	SetSearch(ctx context.Context, name string, search []string) error
}

// envs reconciles the machine's environments: a worker per environment (by ID), which runs
// a svcRunner per service while the environment is up.
type envs struct {
	a       *agent
	svc     Services
	ctx     context.Context // the agent's run: good until it returns
	reports chan<- api.ServiceReport

	mu      sync.Mutex // guards workers and found
	workers map[string]*envWorker
	found   map[string][]ctrd.ServiceStatus // by environment ID: what an earlier agent left, until its worker claims it
}

// envWish is what one environment should be; nil means gone.
type envWish struct {
	spec   api.EnvironmentSpec
	domain string
}

// envWorker reconciles one environment in its own goroutine.
type envWorker struct {
	id   string
	want chan *envWish // capacity 1: only the latest wish counts
}

// adopt finds the services this machine already runs: those of environments coord no longer
// wants here are removed with their volumes, the rest wait for their environment's worker.
func (e *envs) adopt(ctx context.Context, st *api.MachineState) {
	have, err := e.svc.ListServices(ctx)
	if err != nil {
		e.a.logf("agent: listing environment services: %v", err)
		return
	}
	found := map[string][]ctrd.ServiceStatus{}
	for _, s := range have {
		if s.EnvID != "" {
			found[s.EnvID] = append(found[s.EnvID], s)
		}
	}
	ids := slices.Sorted(maps.Keys(found)) // the workers take from found as soon as they start
	e.mu.Lock()
	e.found = found
	e.mu.Unlock()
	for _, id := range ids {
		if !slices.ContainsFunc(st.Environments, func(env api.EnvironmentSpec) bool { return env.ID == id }) {
			e.a.logf("agent: environment %s is no longer wanted here; removing its services and volumes", id)
			e.set(id, nil)
		}
	}
}

// apply hands every environment its latest spec, and a nil one to those coord dropped.
func (e *envs) apply(st *api.MachineState) {
	wanted := map[string]bool{}
	for _, env := range st.Environments {
		wanted[env.ID] = true
		e.set(env.ID, &envWish{spec: env, domain: st.Domain})
	}
	e.mu.Lock()
	gone := slices.DeleteFunc(slices.Collect(maps.Keys(e.workers)), func(id string) bool { return wanted[id] })
	e.mu.Unlock()
	for _, id := range gone {
		e.set(id, nil)
	}
}

// set replaces environment id's wish, starting its worker if there is none.
func (e *envs) set(id string, wish *envWish) {
	e.mu.Lock()
	defer e.mu.Unlock()
	w := e.workers[id]
	if w == nil {
		if e.workers == nil {
			e.workers = map[string]*envWorker{}
		}
		w = &envWorker{id: id, want: make(chan *envWish, 1)}
		e.workers[id] = w
		e.a.wg.Add(1)
		go e.work(w)
	}
	select {
	case <-w.want:
	default:
	}
	w.want <- wish
}

// retire removes a worker whose environment is gone unless a new wish arrived meanwhile.
func (e *envs) retire(w *envWorker) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(w.want) > 0 {
		return false
	}
	delete(e.workers, w.id)
	return true
}

// claim takes what an earlier agent left of environment id.
func (e *envs) claim(id string) []ctrd.ServiceStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.found[id]
	delete(e.found, id)
	return out
}

// work reconciles w's environment whenever its wish changes, and after a failure with
// growing backoff; its runners keep the services as they should be meanwhile. It ends once
// an environment that is no longer wanted is gone.
func (e *envs) work(w *envWorker) {
	defer e.a.wg.Done()
	r := &envRun{e: e, id: w.id, runners: map[string]*svcRunner{}, known: map[string]bool{}}
	defer r.stopRunners()
	var (
		wish    *envWish
		started bool
		fails   int
		timer   = time.NewTimer(time.Hour)
	)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case next := <-w.want:
			if started && sameEnvWish(next, wish) {
				continue // the timer drives retries
			}
			wish, started, fails = next, true, 0
			timer.Stop()
		case <-timer.C:
		}
		err := r.reconcile(e.ctx, wish)
		if err == nil {
			if wish == nil && e.retire(w) {
				return
			}
			continue
		}
		fails++
		next := backoff(fails)
		e.a.logf("agent: environment %s: %v (again in %v)", w.id, err, next.Round(10*time.Millisecond))
		timer.Reset(next)
	}
}

func sameEnvWish(a, b *envWish) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.domain == b.domain && a.spec.Name == b.spec.Name && a.spec.Desired == b.spec.Desired && a.spec.Generation == b.spec.Generation &&
		a.spec.Compose == b.spec.Compose && maps.Equal(a.spec.Variables, b.spec.Variables) &&
		slices.Equal(a.spec.Services, b.spec.Services) && slices.Equal(a.spec.Allow, b.spec.Allow)
}

// envRun is one environment as its worker keeps it.
type envRun struct {
	e       *envs
	id      string
	b       *board                // nil until the environment is named
	runners map[string]*svcRunner // by service name, while the environment is up
	known   map[string]bool       // services that may exist on the machine, by name
	found   map[string]ctrd.ServiceStatus
}

// reconcile makes the environment what wish says.
func (r *envRun) reconcile(ctx context.Context, wish *envWish) error {
	if found := r.e.claim(r.id); found != nil {
		r.found = map[string]ctrd.ServiceStatus{}
		for _, s := range found {
			r.found[s.Name], r.known[s.Name] = s, true
		}
	}
	if wish == nil {
		return r.remove(ctx)
	}
	if r.b == nil || r.b.env != wish.spec.Name {
		r.b = newBoard(r.e.ctx, wish.spec.Name, r.e.reports)
	}
	defer r.b.advance(wish.spec.Generation) // the services are now what it wants, or on their way
	if wish.spec.Desired == api.Stopped {
		return r.stop(ctx, wish.spec)
	}
	plan, err := planEnv(wish.spec, wish.domain)
	if err != nil {
		for _, sa := range wish.spec.Services {
			r.b.set(sa.Name, api.ServiceFailed, err.Error())
		}
		return nil // nothing to retry: a new compose file comes as a new wish
	}
	return r.up(ctx, plan)
}

// stopRunners ends every runner's goroutine; the services stay as they are.
func (r *envRun) stopRunners() {
	for name := range r.runners {
		r.stopRunner(name)
	}
}

// remove deletes every service of the environment and its volumes.
func (r *envRun) remove(ctx context.Context) error {
	r.stopRunners()
	for _, name := range slices.Sorted(maps.Keys(r.known)) {
		if err := r.e.svc.DeleteService(ctx, serviceID(r.id, name)); err != nil && !isNotFound(err) {
			return fmt.Errorf("removing service %s: %w", name, err)
		}
		delete(r.known, name)
	}
	if err := r.e.svc.DeleteVolumes(ctx, r.id); err != nil {
		return fmt.Errorf("removing volumes: %w", err)
	}
	r.e.a.logf("agent: environment %s removed", r.id)
	return nil
}

// stop stops every service; containers, volumes and addresses stay.
func (r *envRun) stop(ctx context.Context, spec api.EnvironmentSpec) error {
	r.stopRunners()
	r.found = nil
	for _, sa := range spec.Services {
		r.known[sa.Name] = true
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(r.known)) {
		if err := r.e.svc.StopService(ctx, serviceID(r.id, name)); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("stopping service %s: %w", name, err))
			continue
		}
		r.b.set(name, api.ServiceStopped, "")
	}
	return errors.Join(errs...)
}

// up runs plan: services removed from the compose file are deleted, those whose definition
// changed are recreated, new ones started (each after what it depends on); the others keep
// running untouched, only told of new peers (services added or removed, workspaces connected).
func (r *envRun) up(ctx context.Context, plan *envPlan) error {
	errs := []error{r.dropRemoved(ctx, plan)}
	for _, name := range slices.Sorted(maps.Keys(plan.bad)) {
		r.stopRunner(name)
		r.b.set(name, api.ServiceFailed, plan.bad[name])
	}
	var fresh []string
	for _, step := range plan.order {
		spec, ok := plan.specs[step.Service]
		if !ok {
			continue
		}
		if run := r.runners[step.Service]; run != nil && run.current().Hash == spec.Hash {
			if run.needsPeers(spec.Hosts, spec.Allow) {
				errs = append(errs, run.setPeers(ctx, spec.Hosts, spec.Allow))
			}
			continue
		}
		r.stopRunner(step.Service)
		fresh = append(fresh, step.Service)
		r.b.update(step.Service, func(s *api.ServiceReport) { // before any dependant looks
			*s = api.ServiceReport{Env: s.Env, Name: s.Name, State: api.ServicePending}
		})
	}
	for _, name := range fresh {
		r.startRunner(plan.specs[name], depsOf(plan.specs[name].Service, plan.specs), isJob(name, plan.specs))
	}
	r.found = nil
	return errors.Join(errs...)
}

// dropRemoved deletes the services that are no longer in the compose file.
func (r *envRun) dropRemoved(ctx context.Context, plan *envPlan) error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(r.known)) {
		if _, ok := plan.specs[name]; ok || plan.bad[name] != "" {
			continue
		}
		r.stopRunner(name)
		if err := r.e.svc.DeleteService(ctx, serviceID(r.id, name)); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("removing service %s: %w", name, err))
			continue
		}
		delete(r.known, name)
		r.b.forget(name)
	}
	return errors.Join(errs...)
}

// stopRunner ends the named service's runner, if it has one; the service stays as it is.
func (r *envRun) stopRunner(name string) {
	if run := r.runners[name]; run != nil {
		run.stop()
		delete(r.runners, name)
	}
}

// startRunner starts the goroutine that keeps spec's service running.
func (r *envRun) startRunner(spec ctrd.ServiceSpec, deps []dep, job bool) {
	name := spec.Service.Name
	ctx, cancel := context.WithCancel(r.e.ctx)
	run := &svcRunner{name: name, svc: r.e.svc, b: r.b, logf: r.e.a.logf, deps: deps, job: job, cancel: cancel,
		done: make(chan struct{}), spec: spec}
	// What an earlier agent left of it: a running container of this definition is adopted;
	// a job that finished (exit 0) is not run again. A stopped service that is no job runs
	// again (after a reboot every task is gone, and the environment is up).
	var found *ctrd.ServiceStatus
	if f, ok := r.found[name]; ok && f.Hash == spec.Hash {
		found = &f
	}
	r.runners[name], r.known[name] = run, true
	go run.run(ctx, found)
}
