package agent

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"

	"meshwork.dev/coord/api"
)

// maxHealthOutput bounds the healthcheck output a report carries.
const maxHealthOutput = 1 << 10

// board is what an environment's services are, as the agent observes them: the workers
// gate dependants on it, and every change is reported to coord.
type board struct {
	env     string                   // the environment's name, as reports name it
	ctx     context.Context          // the agent's run: reports stop with it
	reports chan<- api.ServiceReport // to the reporter

	mu      sync.Mutex // guards gen, svcs and changed
	gen     uint64     // the environment's generation every report carries (see advance)
	svcs    map[string]api.ServiceReport
	changed chan struct{} // closed (and replaced) on every change
}

func newBoard(ctx context.Context, env string, reports chan<- api.ServiceReport) *board {
	return &board{env: env, ctx: ctx, reports: reports, svcs: map[string]api.ServiceReport{}, changed: make(chan struct{})}
}

// snapshot returns the services' states and a channel closed at the next change.
func (b *board) snapshot() (map[string]api.ServiceReport, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.svcs), b.changed
}

// update changes svc's state with f and reports it when it changed.
func (b *board) update(svc string, f func(r *api.ServiceReport)) {
	b.mu.Lock()
	r := b.svcs[svc]
	old := r
	r.Env, r.Name, r.Generation = b.env, svc, b.gen
	f(&r)
	if len(r.HealthOutput) > maxHealthOutput {
		r.HealthOutput = strings.ToValidUTF8(r.HealthOutput[:maxHealthOutput], "")
	}
	if _, ok := b.svcs[svc]; ok && r == old {
		b.mu.Unlock()
		return
	}
	b.svcs[svc] = r
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
	select {
	case b.reports <- r:
	case <-b.ctx.Done():
	}
}

// advance makes gen the generation of every report, and reports every service again under
// it: call it once the services are what generation gen wants, or on their way there
// (stopped, or reset to pending), so that a report of gen never carries an older state.
func (b *board) advance(gen uint64) {
	b.mu.Lock()
	if gen == b.gen {
		b.mu.Unlock()
		return
	}
	b.gen = gen
	names := slices.Sorted(maps.Keys(b.svcs))
	b.mu.Unlock()
	for _, name := range names {
		b.update(name, func(*api.ServiceReport) {})
	}
}

// set makes svc's state st with reason why, keeping its restarts; health goes with a state
// that is not running.
func (b *board) set(svc, st, why string) {
	b.update(svc, func(r *api.ServiceReport) {
		r.State, r.Reason = st, why
		if st != api.ServiceRunning {
			r.Health, r.HealthOutput = "", ""
		}
	})
}

// forget drops svc (removed from the environment).
func (b *board) forget(svc string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.svcs, svc)
	close(b.changed)
	b.changed = make(chan struct{})
}
