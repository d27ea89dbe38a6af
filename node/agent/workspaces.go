package agent

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/overlay/meshdns"
	"meshwork.dev/workspace/ctrd"
)

// adopt finds the workspaces this machine already runs (an earlier agent's), so those coord
// no longer wants are removed and the rest are taken over as they are.
func (a *agent) adopt(ctx context.Context, rt Runtime, st *api.MachineState, reports chan<- api.WorkspaceReport) {
	have, err := rt.List(ctx)
	if err != nil {
		a.logf("agent: listing workspaces: %v", err)
		return
	}
	for _, h := range have {
		if !slices.ContainsFunc(st.Workspaces, func(w api.WorkspaceSpec) bool { return w.Name == h.Name }) {
			a.logf("agent: %s is no longer wanted here; removing it", h.Name)
			a.worker(ctx, rt, h.Name, reports).set(nil)
		}
	}
}

// apply hands every workspace its latest spec, and a nil one to those coord dropped.
func (a *agent) apply(ctx context.Context, rt Runtime, st *api.MachineState, reports chan<- api.WorkspaceReport) {
	wanted := map[string]bool{}
	for _, w := range st.Workspaces {
		wanted[w.Name] = true
		spec := w
		spec.User = cmp.Or(spec.User, "dev")
		a.worker(ctx, rt, w.Name, reports).set(&wsWish{spec: spec, domain: st.Domain})
	}
	a.mu.Lock()
	var gone []*worker
	for name, w := range a.workers {
		if !wanted[name] {
			gone = append(gone, w)
		}
	}
	a.mu.Unlock()
	for _, w := range gone {
		w.set(nil)
	}
}

// workspaceRoutes are the single-address prefixes of every workspace and every environment
// service on the machine (those of environments that are down too: they keep their addresses).
func workspaceRoutes(st *api.MachineState) []netip.Prefix {
	var addrs []string
	for _, w := range st.Workspaces {
		addrs = append(addrs, w.IPv4, w.IPv6)
	}
	for _, e := range st.Environments {
		for _, s := range e.Services {
			addrs = append(addrs, s.IPv4, s.IPv6)
		}
	}
	var out []netip.Prefix
	for _, s := range addrs {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// wsWish is what one workspace should be; nil means gone.
type wsWish struct {
	spec   api.WorkspaceSpec
	domain string
}

func sameWish(a, b *wsWish) bool { return reflect.DeepEqual(a, b) }

// worker reconciles one workspace, by name, in its own goroutine.
type worker struct {
	name string
	want chan *wsWish // capacity 1: only the latest wish counts
	mu   *sync.Mutex  // the agent's: set and the worker's exit must not interleave
}

// set replaces the worker's wish with w.
func (w *worker) set(wish *wsWish) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.want:
	default:
	}
	w.want <- wish
}

// worker returns the named workspace's worker, starting one if there is none.
func (a *agent) worker(ctx context.Context, rt Runtime, name string, reports chan<- api.WorkspaceReport) *worker {
	a.mu.Lock()
	defer a.mu.Unlock()
	if w := a.workers[name]; w != nil {
		return w
	}
	if a.workers == nil {
		a.workers = map[string]*worker{}
	}
	w := &worker{name: name, want: make(chan *wsWish, 1), mu: &a.mu}
	a.workers[name] = w
	a.wg.Add(1)
	go a.work(ctx, rt, w, reports)
	return w
}

// work reconciles w's workspace whenever its wish changes, again every Resync, and after a
// failure with growing backoff. It ends once a workspace that is no longer wanted is gone.
func (a *agent) work(ctx context.Context, rt Runtime, w *worker, reports chan<- api.WorkspaceReport) {
	defer a.wg.Done()
	var (
		wish    *wsWish
		started bool // wish holds a wish received
		done    bool // the last reconcile succeeded
		run     wsRun
		fails   int
		timer   = time.NewTimer(time.Hour)
	)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case next := <-w.want:
			if started && sameWish(next, wish) {
				// Nothing new: the timer drives checks and retries, so a failure that
				// coord hears of does not come straight back as a retry.
				if wish == nil && done && a.retire(w) {
					return
				}
				continue
			}
			wish, started, fails = next, true, 0
		case <-timer.C:
		}
		err := a.reconcile(ctx, rt, w.name, wish, &run, reports)
		done = err == nil
		if wish == nil && done && a.retire(w) {
			return
		}
		next := cmp.Or(a.Resync, 10*time.Second)
		if err != nil {
			fails++
			next = backoff(fails)
			a.logf("agent: %s: %v (again in %v)", w.name, err, next.Round(10*time.Millisecond))
		}
		timer.Reset(next)
	}
}

// retire removes a finished worker unless a new wish for its name arrived meanwhile.
func (a *agent) retire(w *worker) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(w.want) > 0 {
		return false
	}
	delete(a.workers, w.name)
	return true
}

// wsRun is what a worker knows of the workspace it runs.
type wsRun struct {
	id     string   // the ID of the workspace this name runs as, to notice a replacement
	search []string // the search domains it was last given (nil: not known)
}

// reconcile makes one workspace what its wish says and reports what it then is.
func (a *agent) reconcile(ctx context.Context, rt Runtime, name string, wish *wsWish, run *wsRun, reports chan<- api.WorkspaceReport) error {
	gone := wish == nil || (run.id != "" && run.id != wish.spec.ID) // deleted, or replaced by another of its name
	if gone || wish.spec.Desired == api.Stopped {
		a.wsAPI.down(name)
		if a.ssh != nil {
			a.ssh.down(name)
		}
	}
	if gone {
		if err := rt.Delete(ctx, name); err != nil {
			return fmt.Errorf("removing: %w", err)
		}
		*run = wsRun{}
		if wish == nil {
			a.logf("agent: %s removed", name)
			return nil
		}
	}
	say := func(st ctrd.Status) {
		reports <- api.WorkspaceReport{Name: name, State: string(st.State), Reason: st.Reason}
	}
	if wish.spec.Desired == api.Stopped {
		if err := rt.Stop(ctx, name); err != nil {
			return fmt.Errorf("stopping: %w", err)
		}
		run.search = nil
		say(ctrd.Status{Name: name, State: ctrd.StateStopped})
		return nil
	}
	spec, err := runtimeSpec(wish)
	if err != nil {
		say(ctrd.Status{Name: name, State: ctrd.StateFailed, Reason: err.Error()})
		return err
	}
	run.id = spec.ID
	st, err := rt.Run(ctx, spec, say)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		say(ctrd.Status{Name: name, State: ctrd.StateFailed, Reason: cmp.Or(st.Reason, err.Error())})
		return err
	}
	if st.State == ctrd.StateRunning {
		if err := a.setSearch(ctx, rt, name, spec.Search, run); err != nil {
			a.logf("agent: %s: %v (again at the next check)", name, err) // it runs: report it so
		}
	}
	rep := api.WorkspaceReport{Name: name, State: string(st.State), Reason: st.Reason}
	if a.ssh != nil && st.State == ctrd.StateRunning {
		if rep.HostKey, err = a.ssh.up(a, spec); err != nil {
			a.logf("agent: %s: serving ssh: %v", name, err)
		}
	}
	if st.State == ctrd.StateRunning {
		a.serveWorkspaceAPI(rt, name)
	}
	reports <- rep
	return nil
}

// setSearch gives a running workspace the search domains of the environment it is connected
// to (env connect/disconnect), without restarting it.
func (a *agent) setSearch(ctx context.Context, rt Runtime, name string, search []string, run *wsRun) error {
	if run.search != nil && slices.Equal(run.search, search) {
		return nil
	}
	svc, ok := rt.(Services)
	if !ok {
		return nil
	}
	if err := svc.SetSearch(ctx, name, search); err != nil {
		return fmt.Errorf("setting its search domains: %w", err)
	}
	run.search = search
	return nil
}

// runtimeSpec turns coord's spec into the runtime's.
func runtimeSpec(w *wsWish) (ctrd.Spec, error) {
	s := ctrd.Spec{ID: w.spec.ID, Name: w.spec.Name, User: w.spec.User, Image: w.spec.Image,
		CPU: w.spec.CPU, Memory: w.spec.Memory, DNS: []string{meshdns.Resolver.String()}, Search: []string{w.domain}}
	if w.spec.Env != "" {
		s.Search = envSearch(w.spec.Env, w.domain)
	}
	var err error
	if s.IPv4, err = netip.ParseAddr(w.spec.IPv4); err != nil {
		return s, fmt.Errorf("workspace %s has no mesh address: %w", w.spec.Name, err)
	}
	if w.spec.IPv6 != "" {
		if s.IPv6, err = netip.ParseAddr(w.spec.IPv6); err != nil {
			return s, fmt.Errorf("workspace %s: bad IPv6 address: %w", w.spec.Name, err)
		}
	}
	return s, nil
}
