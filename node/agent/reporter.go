package agent

import (
	"context"
	"time"

	"meshwork.dev/coord/api"
)

// reporter sends coord what the workers observe: batched, only the latest per workspace and
// per service and per intercept, retried until it lands (a report lost to a dead replica is
// sent to the next).
func (a *agent) reporter(ctx context.Context, src source, reports <-chan api.WorkspaceReport, svcReports <-chan api.ServiceReport, icReports <-chan api.InterceptReport) {
	defer a.wg.Done()
	ws := newLatest(func(r api.WorkspaceReport) string { return r.Name })
	svcs := newLatest(func(r api.ServiceReport) string { return r.Env + "/" + r.Name })
	ics := newLatest(func(r api.InterceptReport) string { return r.ID })
	fails := 0
	var retry *time.Timer // set while a failed report waits to be sent again
	for {
		var retryC <-chan time.Time
		if retry != nil {
			retryC = retry.C
		}
		select {
		case <-ctx.Done():
			return
		case r := <-reports:
			ws.add(r)
		case r := <-svcReports:
			svcs.add(r)
		case r := <-icReports:
			ics.add(r)
		case <-retryC:
			retry = nil
		}
		drain(reports, ws.add)
		drain(svcReports, svcs.add)
		drain(icReports, ics.add)
		if retry != nil || len(ws.pending)+len(svcs.pending)+len(ics.pending) == 0 {
			continue
		}
		rep := &api.MachineReport{Workspaces: ws.list(), Services: svcs.list(), Intercepts: ics.list()}
		if err := src.report(ctx, rep); err != nil {
			fails++
			a.logf("agent: reporting to coord: %v", err)
			retry = time.NewTimer(backoff(fails))
			continue
		}
		fails = 0
		ws.sent()
		svcs.sent()
		ics.sent()
	}
}

// latest holds the reports not yet sent, only the latest of each thing.
type latest[R comparable] struct {
	key      func(R) string
	pending  map[string]R
	lastSent map[string]R
}

func newLatest[R comparable](key func(R) string) *latest[R] {
	return &latest[R]{key: key, pending: map[string]R{}, lastSent: map[string]R{}}
}

// add queues r, unless coord already has it.
func (l *latest[R]) add(r R) {
	k := l.key(r)
	if s, ok := l.lastSent[k]; ok && s == r {
		delete(l.pending, k) // back to what coord has: an older change queued must not go
		return
	}
	l.pending[k] = r
}

func (l *latest[R]) list() []R {
	var out []R
	for _, r := range l.pending {
		out = append(out, r)
	}
	return out
}

// sent records that coord has every pending report.
func (l *latest[R]) sent() {
	for k, r := range l.pending {
		l.lastSent[k] = r
		delete(l.pending, k)
	}
}

// drain takes whatever else is queued, without waiting.
func drain[R any](reports <-chan R, add func(R)) {
	for {
		select {
		case r := <-reports:
			add(r)
		default:
			return
		}
	}
}
