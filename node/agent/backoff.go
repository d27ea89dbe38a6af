package agent

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is the wait after n consecutive failures: 0.5 s doubling up to 30 s, with a
// random fifth taken off (jitter), so agents that lost coord at once do not come back at
// once. Every retry loop of the agent waits with it.
func backoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := min(500*time.Millisecond<<min(n-1, 6), 30*time.Second)
	return d - rand.N(d/5)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
