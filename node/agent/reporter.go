package agent

import (
	"context"
	"time"

	"meshwork.dev/coord/api"
)

// reporter sends coord what the workers observe: batched, only the latest per workspace,
// retried until it lands (a report lost to a dead replica is sent to the next).
func (a *agent) reporter(ctx context.Context, src source, reports <-chan api.WorkspaceReport) {
	defer a.wg.Done()
	pending := map[string]api.WorkspaceReport{}
	sent := map[string]api.WorkspaceReport{}
	add := func(r api.WorkspaceReport) {
		if sent[r.Name] != r {
			pending[r.Name] = r
		}
	}
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
			add(r)
			drain(reports, add)
			if retry != nil {
				continue
			}
		case <-retryC:
			retry = nil
		}
		if len(pending) == 0 {
			continue
		}
		rep := &api.MachineReport{}
		for _, r := range pending {
			rep.Workspaces = append(rep.Workspaces, r)
		}
		if err := src.report(ctx, rep); err != nil {
			fails++
			a.logf("agent: reporting to coord: %v", err)
			retry = time.NewTimer(backoff(fails))
			continue
		}
		fails = 0
		for n, r := range pending {
			sent[n] = r
			delete(pending, n)
		}
	}
}

// drain takes whatever else is queued, without waiting.
func drain(reports <-chan api.WorkspaceReport, add func(api.WorkspaceReport)) {
	for {
		select {
		case r := <-reports:
			add(r)
		default:
			return
		}
	}
}
