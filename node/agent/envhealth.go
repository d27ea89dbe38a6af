package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/workspace/compose"
)

// Docker's healthcheck defaults.
const (
	defaultHealthInterval = 30 * time.Second
	defaultHealthTimeout  = 30 * time.Second
	defaultHealthRetries  = 3
)

// checkHealth runs service id's healthcheck every interval until ctx ends, as docker does:
// health starts as starting; a pass makes it healthy; retries failures in a row make it
// unhealthy, except that failures within start_period of began do not count.
func (r *svcRunner) checkHealth(ctx context.Context, id string, hc *compose.Healthcheck, began time.Time) {
	interval := cmp.Or(hc.Interval, defaultHealthInterval)
	timeout := cmp.Or(hc.Timeout, defaultHealthTimeout)
	retries := cmp.Or(hc.Retries, defaultHealthRetries)
	argv := healthArgv(hc.Test)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	streak := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		code, out, err := r.svc.ExecService(ctx, id, argv, timeout)
		if ctx.Err() != nil {
			return
		}
		pass := err == nil && code == 0
		output := string(out)
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			output = fmt.Sprintf("healthcheck timed out after %v", timeout)
		case err != nil:
			output = fmt.Sprintf("healthcheck could not run: %v", err)
		}
		switch {
		case pass:
			streak = 0
		case time.Since(began) >= hc.StartPeriod:
			streak++
		}
		r.b.update(r.name, func(s *api.ServiceReport) {
			if s.State != api.ServiceRunning {
				return
			}
			s.HealthOutput = output
			if pass {
				s.Health = api.HealthHealthy
			} else if streak >= retries {
				s.Health = api.HealthUnhealthy
			}
		})
	}
}

// healthArgv is the command a compose healthcheck test runs.
func healthArgv(test []string) []string {
	if len(test) == 0 {
		return nil
	}
	switch test[0] {
	case "CMD":
		return test[1:]
	case "CMD-SHELL":
		if len(test) > 1 {
			return []string{"/bin/sh", "-c", test[1]}
		}
	}
	return test
}
