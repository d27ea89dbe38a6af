package adminapi

import (
	"context"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
)

// Failed API logins: counted per source address (an IPv6 caller by its /64, which one
// machine usually holds whole) in windows of loginWindow. After Server.LoginLimit failures
// in a window the address is refused, unchecked, with 429 until the window ends. The audit
// log gets one event when an address first fails in a window and one when it is blocked,
// each with the failures counted since the last one (a window's failures after its first
// event are in the next event of that address): never one per attempt.
const (
	loginWindow       = time.Minute
	defaultLoginLimit = 10
	maxLoginAddrs     = 10_000 // addresses tracked at once; more evict one at random
)

type loginGuard struct {
	mu    sync.Mutex
	addrs map[netip.Prefix]*loginFails // guarded by mu
}

// loginFails is one address's failures in its current window.
type loginFails struct {
	start   time.Time
	fails   int // in this window
	pending int // failures not yet audited
	refused int // attempts refused unchecked, not yet audited
}

// sourcePrefix is what failures are counted by: the address, or an IPv6 address's /64.
func sourcePrefix(remoteAddr string) netip.Prefix {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Prefix{}
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return p
	}
	return netip.PrefixFrom(a, a.BitLen())
}

// entry returns p's window at now, a fresh one if the last has ended. Called with mu held.
func (g *loginGuard) entry(p netip.Prefix, now time.Time) *loginFails {
	if g.addrs == nil {
		g.addrs = map[netip.Prefix]*loginFails{}
	}
	e := g.addrs[p]
	if e == nil || now.Sub(e.start) >= loginWindow {
		if e == nil && len(g.addrs) >= maxLoginAddrs {
			g.evict(now)
		}
		next := &loginFails{start: now}
		if e != nil {
			next.pending, next.refused = e.pending, e.refused
		}
		e = next
		g.addrs[p] = e
	}
	return e
}

// evict drops the ended windows, or one at random if none has ended. Called with mu held.
func (g *loginGuard) evict(now time.Time) {
	for p, e := range g.addrs {
		if now.Sub(e.start) >= loginWindow {
			delete(g.addrs, p)
		}
	}
	for p := range g.addrs {
		if len(g.addrs) < maxLoginAddrs {
			break
		}
		delete(g.addrs, p)
	}
}

// blocked reports how long p is still refused for, counting the attempt; 0: not blocked.
func (g *loginGuard) blocked(p netip.Prefix, limit int, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.addrs[p]
	if e == nil || e.fails < limit || now.Sub(e.start) >= loginWindow {
		return 0
	}
	e.refused++
	return e.start.Add(loginWindow).Sub(now)
}

// failed counts a failed login from p and returns what to audit, if anything.
func (g *loginGuard) failed(p netip.Prefix, limit int, now time.Time) *fsm.LoginFailure {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.entry(p, now)
	e.fails++
	e.pending++
	if e.fails != 1 && e.fails != limit {
		return nil
	}
	f := &fsm.LoginFailure{Failures: e.pending, Refused: e.refused, Blocked: e.fails >= limit}
	e.pending, e.refused = 0, 0
	return f
}

func (s *Server) loginLimit() int {
	if s.LoginLimit > 0 {
		return s.LoginLimit
	}
	return defaultLoginLimit
}

// backOff answers 429 if r's address has failed to log in too often of late.
func (s *Server) backOff(w http.ResponseWriter, r *http.Request) error {
	d := s.logins.blocked(sourcePrefix(r.RemoteAddr), s.loginLimit(), time.Now())
	if d <= 0 {
		return nil
	}
	secs := int((d + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return apiErr(http.StatusTooManyRequests, api.CodeTooMany,
		"too many failed logins from %s: retry in %d s with a valid API key", hostOf(r.RemoteAddr), secs)
}

// loginFailed counts a failed login and audits it when the guard says so.
func (s *Server) loginFailed(r *http.Request, keyID string, err error) {
	f := s.logins.failed(sourcePrefix(r.RemoteAddr), s.loginLimit(), time.Now())
	if f == nil {
		return
	}
	f.KeyID, f.Reason = keyID, err.Error()
	if len(f.Reason) > 256 {
		f.Reason = f.Reason[:256]
	}
	if len(f.KeyID) > fsm.MaxKeyName {
		f.KeyID = f.KeyID[:fsm.MaxKeyName]
	}
	host := hostOf(r.RemoteAddr)
	cmd, cerr := fsm.NewCommand("login.fail", "anonymous", host, f)
	if cerr != nil {
		return
	}
	// The audit line outlives the request: a client that hangs up must not drop it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	res, aerr := s.Backend.Apply(ctx, cmd)
	if aerr == nil && res.Err != nil {
		aerr = res.Err
	}
	if aerr != nil && s.Logf != nil {
		s.Logf("adminapi: auditing failed logins from %s: %v", host, aerr)
	}
}

// hostOf is the address of ip:port, or the whole string if it is not one.
func hostOf(remoteAddr string) string {
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		return ap.Addr().String()
	}
	return remoteAddr
}
