package adminapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
)

// from sends a request as if from addr (ip:port) and returns the answer.
func (e *env) from(addr, key, method, path string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	r.RemoteAddr = addr
	r.Header.Set("Authorization", "Bearer "+key)
	w := httptest.NewRecorder()
	e.srv.Config.Handler.ServeHTTP(w, r)
	return w
}

// TestLoginBackOff: a burst of bad keys from one address is refused with 429 after
// defaultLoginLimit failures (even a good key, unchecked), the audit log shows the failures
// in two events rather than one per attempt, and callers elsewhere are not affected.
func TestLoginBackOff(t *testing.T) {
	e := newEnv(t)
	const attacker = "198.51.100.7:40000"
	for i := range 25 {
		w := e.from(attacker, keys.New(keys.APIKey).String(), "GET", "/v1/workspaces")
		want := http.StatusUnauthorized
		if i >= defaultLoginLimit {
			want = http.StatusTooManyRequests
		}
		if w.Code != want {
			t.Fatalf("bad key %d: %d %s; want %d", i+1, w.Code, w.Body, want)
		}
	}
	w := e.from(attacker, e.alice, "GET", "/v1/workspaces")
	retry, _ := strconv.Atoi(w.Header().Get("Retry-After"))
	if w.Code != http.StatusTooManyRequests || retry < 1 || retry > 60 || !strings.Contains(w.Body.String(), api.CodeTooMany) ||
		!strings.Contains(w.Body.String(), "too many failed logins from 198.51.100.7: retry in") {
		t.Errorf("a good key from the blocked address: %d (Retry-After %q) %s; want 429, unchecked", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if w := e.from("198.51.100.8:40000", e.alice, "GET", "/v1/workspaces"); w.Code != http.StatusOK {
		t.Errorf("a good key from another address: %d %s", w.Code, w.Body)
	}

	w = e.from("198.51.100.8:40000", e.admin, "GET", "/v1/audit?since=0")
	var events []api.AuditEvent
	if err := json.Unmarshal(w.Body.Bytes(), &events); err != nil {
		t.Fatalf("audit: %d %s", w.Code, w.Body)
	}
	var lines []string
	for _, ev := range events {
		if ev.Action == "login.fail" {
			lines = append(lines, ev.Source+" "+ev.Object+" "+ev.Detail)
		}
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "198.51.100.7 apikey/") || !strings.Contains(lines[0], "1 failed API login(s), last: unknown API key") ||
		!strings.Contains(lines[1], "9 failed API login(s)") || !strings.Contains(lines[1], "backing off") {
		t.Errorf("login.fail audit events:\n%s\nwant two: the first failure and the block, with counts", strings.Join(lines, "\n"))
	}
}

// TestLoginBackOffIPv6: an IPv6 caller is counted by its /64, which it can hop around in.
func TestLoginBackOffIPv6(t *testing.T) {
	e := newEnv(t)
	for range defaultLoginLimit {
		e.from("[2001:db8:1:2::1]:40000", keys.New(keys.APIKey).String(), "GET", "/v1/workspaces")
	}
	if w := e.from("[2001:db8:1:2::99]:40000", e.alice, "GET", "/v1/workspaces"); w.Code != http.StatusTooManyRequests {
		t.Errorf("another address in the /64: %d; want 429", w.Code)
	}
	if w := e.from("[2001:db8:1:3::1]:40000", e.alice, "GET", "/v1/workspaces"); w.Code != http.StatusOK {
		t.Errorf("another /64: %d; want 200", w.Code)
	}
}

// TestLoginGuardWindows: failures after a window's first event are reported with the next
// event of that address, and the guard holds a bounded number of addresses.
func TestLoginGuardWindows(t *testing.T) {
	var g loginGuard
	p := sourcePrefix("192.0.2.1:1")
	t0 := time.Now()
	if f := g.failed(p, 10, t0); f == nil || f.Failures != 1 {
		t.Fatalf("first failure: %+v; want it reported", f)
	}
	for range 4 {
		if f := g.failed(p, 10, t0.Add(time.Second)); f != nil {
			t.Fatalf("a failure within the window was reported at once: %+v", f)
		}
	}
	if f := g.failed(p, 10, t0.Add(loginWindow+time.Second)); f == nil || f.Failures != 5 || f.Blocked {
		t.Errorf("first failure of the next window: %+v; want the 4 held back and itself", f)
	}
	for i := range maxLoginAddrs + 100 {
		g.failed(sourcePrefix(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 1).String()), 10, t0)
	}
	if n := len(g.addrs); n > maxLoginAddrs {
		t.Errorf("the guard holds %d addresses; want at most %d", n, maxLoginAddrs)
	}
}

// lagging is a replica that has not yet applied what the leader committed: its stale reads
// see an older state; a linearizable read sees the leader's, or fails without a leader.
type lagging struct {
	*localBackend
	old      *fsm.Store
	noLeader bool
}

func (b *lagging) Read(ctx context.Context, consistency string) (*fsm.Store, error) {
	switch {
	case consistency != api.Linearizable:
		return b.old, nil
	case b.noLeader:
		return nil, apiErr(http.StatusServiceUnavailable, api.CodeUnavailable, "no leader")
	}
	return b.localBackend.Read(ctx, consistency)
}

// TestGoodKeyOnALaggingReplica: a replica that has not applied a key's making yet (restarted,
// behind) still takes the key, and never counts it as a failed login, whatever the number
// of tries; without a leader it answers 503, not 401.
func TestGoodKeyOnALaggingReplica(t *testing.T) {
	e := newEnv(t)
	b := &lagging{localBackend: e.b, old: fsm.New(nil).Store()}
	srv := (&Server{Backend: b, Logf: t.Logf, Secrets: e.key}).Handler()
	send := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/v1/workspaces", nil)
		r.RemoteAddr = "198.51.100.9:40000"
		r.Header.Set("Authorization", "Bearer "+e.alice)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		return w
	}
	for i := range 2 * defaultLoginLimit {
		if w := send(); w.Code != http.StatusOK {
			t.Fatalf("try %d with a good key on a lagging replica: %d %s", i+1, w.Code, w.Body)
		}
	}
	b.noLeader = true
	for i := range 2 * defaultLoginLimit {
		if w := send(); w.Code != http.StatusServiceUnavailable {
			t.Fatalf("try %d without a leader: %d %s; want 503 (never 401, never 429)", i+1, w.Code, w.Body)
		}
	}
}
