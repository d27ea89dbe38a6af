package agent

import (
	"context"
	"maps"
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

	mu      sync.Mutex // guards svcs and changed
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
	r.Env, r.Name = b.env, svc
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
