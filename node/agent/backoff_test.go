package agent

import (
	"testing"
	"time"
)

// TestBackoff: the wait doubles from 0.5 s up to 30 s, each one jittered down by at most a
// fifth, and two agents failing together do not all wait alike.
func TestBackoff(t *testing.T) {
	for n, base := range map[int]time.Duration{1: 500 * time.Millisecond, 2: time.Second, 4: 4 * time.Second, 7: 30 * time.Second, 50: 30 * time.Second} {
		seen := map[time.Duration]bool{}
		for range 100 {
			d := backoff(n)
			if d > base || d <= base-base/5 {
				t.Fatalf("backoff(%d) = %v, want in (%v, %v]", n, d, base-base/5, base)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("backoff(%d) is always %v: no jitter", n, backoff(n))
		}
	}
	if d := backoff(0); d != 0 {
		t.Errorf("backoff(0) = %v, want 0", d)
	}
}
