// Package intercept is the node's side of personal intercepts: an HTTP proxy in front of an
// environment service that sends each request whose headers match a route to that route's
// workspace and every other request to the service, and a probe of a route's target.
package intercept

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"meshwork.dev/coord/api"
)

// Route sends the requests carrying all of Headers to Target.
type Route struct {
	ID      string            // the intercept's ID
	Headers []api.HeaderMatch // every one must match: Name in any case, one of its values exactly Value
	Target  string            // "ip:port" of the workspace's port
	Down    bool              // the target does not answer: its requests go to the service
}

// DefaultTargetTimeout bounds a dial to a route's target when Proxy.TargetTimeout is zero.
const DefaultTargetTimeout = time.Second

// Proxy is the personal-intercept proxy in front of one service port. The zero value with
// Service set is ready; routes are set (and changed, live) with SetRoutes.
type Proxy struct {
	Service string // "ip:port" of the service: requests no route takes go there
	// Dial opens upstream connections (to the service and the targets); nil: a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TargetTimeout bounds a dial to a route's target, after which the request goes to the
	// service; zero: DefaultTargetTimeout.
	TargetTimeout time.Duration
	// Logf logs upstream failures; nil: they are not logged.
	Logf func(format string, args ...any)

	routes atomic.Pointer[[]route] // in match order

	initOnce sync.Once
	h1, h2   *http.Transport // to upstreams, HTTP/1.1 and h2c (prior knowledge)
	rp       *httputil.ReverseProxy
	pool     h1Pool // the HTTP/1.1 path's upstream connections (h1.go)

	mu       sync.Mutex                // guards requests
	requests map[string]*atomic.Uint64 // diverted per route ID
}

// route is a Route as matched: header names canonical.
type route struct {
	Route
	n *atomic.Uint64 // requests diverted
}

// SetRoutes replaces the routes; requests already under way finish where they went. A request
// goes to the first route not Down whose headers all match, routes with more headers first,
// then by ID.
func (p *Proxy) SetRoutes(routes []Route) {
	rs := make([]route, 0, len(routes))
	for _, r := range routes {
		r.Headers = slices.Clone(r.Headers)
		for i := range r.Headers {
			r.Headers[i].Name = http.CanonicalHeaderKey(r.Headers[i].Name)
		}
		rs = append(rs, route{Route: r, n: p.counter(r.ID)})
	}
	slices.SortStableFunc(rs, func(a, b route) int {
		return cmp.Or(cmp.Compare(len(b.Headers), len(a.Headers)), cmp.Compare(a.ID, b.ID))
	})
	p.routes.Store(&rs)
}

func (p *Proxy) counter(id string) *atomic.Uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.requests == nil {
		p.requests = map[string]*atomic.Uint64{}
	}
	if p.requests[id] == nil {
		p.requests[id] = new(atomic.Uint64)
	}
	return p.requests[id]
}

// Requests reports how many requests each route has taken to its target so far, by route ID.
func (p *Proxy) Requests() map[string]uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]uint64, len(p.requests))
	for id, n := range p.requests {
		m[id] = n.Load()
	}
	return m
}

// match is the route r goes to, or nil: the service.
func (p *Proxy) match(r *http.Request) *route {
	rs := p.routes.Load()
	if rs == nil {
		return nil
	}
	for i := range *rs {
		rt := &(*rs)[i]
		if !rt.Down && headersMatch(r.Header, rt.Headers) {
			return rt
		}
	}
	return nil
}

func headersMatch(h http.Header, want []api.HeaderMatch) bool {
	for _, m := range want {
		if !slices.Contains(h[m.Name], m.Value) {
			return false
		}
	}
	return true
}

// Serve answers HTTP/1.1 and h2c (prior knowledge) connections from ln until ln closes, then
// closes the connections it still holds.
func (p *Proxy) Serve(ln net.Listener) error {
	p.init()
	srv := &http.Server{Handler: p, Protocols: serverProtocols(),
		ReadHeaderTimeout: time.Minute}
	err := srv.Serve(ln)
	srv.Close()
	p.h1.CloseIdleConnections()
	p.h2.CloseIdleConnections()
	p.pool.closeAll()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("intercept proxy for %s: %w", p.Service, err)
}

// ServeHTTP proxies one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.init()
	declineH2CUpgrade(r)
	if plainH1(r) {
		p.serveH1(w, r)
		return
	}
	p.rp.ServeHTTP(w, r)
}

// declineH2CUpgrade answers an HTTP/1.1 request asking to upgrade to h2c as plain HTTP/1.1 (as
// the client must accept): upgraded, the connection would go, whole, wherever its first
// request went, and later requests on it would not be routed one by one.
func declineH2CUpgrade(r *http.Request) {
	if r.ProtoMajor == 1 && strings.EqualFold(r.Header.Get("Upgrade"), "h2c") {
		r.Header.Del("Upgrade")
		r.Header.Del("Http2-Settings")
	}
}

func serverProtocols() *http.Protocols {
	var ps http.Protocols
	ps.SetHTTP1(true)
	ps.SetUnencryptedHTTP2(true)
	return &ps
}

// Probe reports whether a TCP connection to addr opens within timeout.
func Probe(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string, timeout time.Duration) error {
	if dial == nil {
		dial = new(net.Dialer).DialContext
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("probe %s: %w", addr, err)
	}
	return c.Close()
}
