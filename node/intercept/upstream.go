package intercept

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"time"
)

// forwardedHeaders are the headers httputil.ReverseProxy's Rewrite drops from what it sends:
// the proxy puts back those the request came with (and adds none), so the service sees the
// request as it would without the proxy.
var forwardedHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// routeKey carries the route a request was sent to, in the outgoing request's context.
type routeKey struct{}

// dialError marks a failed dial: nothing of the request was sent.
type dialError struct{ err error }

func (e dialError) Error() string { return e.err.Error() }
func (e dialError) Unwrap() error { return e.err }

func (p *Proxy) init() {
	p.initOnce.Do(func() {
		p.h1 = p.transport(false)
		p.h2 = p.transport(true)
		p.rp = &httputil.ReverseProxy{
			Rewrite:       p.rewrite,
			Transport:     roundTripper{p},
			FlushInterval: -1,
			ErrorLog:      log.New(io.Discard, "", 0),
			ErrorHandler:  p.upstreamFailed,
		}
	})
}

// transport keeps connections to the service and the targets alive, HTTP/1.1 or h2c.
func (p *Proxy) transport(h2c bool) *http.Transport {
	var ps http.Protocols
	ps.SetHTTP1(!h2c)
	ps.SetUnencryptedHTTP2(h2c)
	return &http.Transport{
		Protocols:           &ps,
		DialContext:         p.dial,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true, // pass Accept-Encoding and bodies as they are
	}
}

func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if addr != p.Service {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cmp.Or(p.TargetTimeout, DefaultTargetTimeout))
		defer cancel()
	}
	dial := p.Dial
	if dial == nil {
		dial = new(net.Dialer).DialContext
	}
	c, err := dial(ctx, network, addr)
	if err != nil {
		return nil, dialError{err}
	}
	return c, nil
}

// rewrite points the request at its route's target or at the service, leaving the rest as it came.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = p.Service
	if rt := p.match(pr.In); rt != nil {
		pr.Out.URL.Host = rt.Target
		pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), routeKey{}, rt))
	}
	for _, h := range forwardedHeaders {
		if v, ok := pr.In.Header[h]; ok {
			pr.Out.Header[h] = v
		}
	}
}

// roundTripper sends over HTTP/2 what came over HTTP/2 (gRPC needs it end to end), the rest
// over HTTP/1.1; a request whose target cannot be dialled goes to the service instead.
type roundTripper struct{ p *Proxy }

func (t roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	tr := t.p.h1
	if r.ProtoMajor == 2 {
		tr = t.p.h2
	}
	rt, _ := r.Context().Value(routeKey{}).(*route)
	res, err := tr.RoundTrip(r)
	if rt == nil {
		return res, err
	}
	if errors.As(err, new(dialError)) {
		t.p.logf("intercept %s: target %s: %v: sending the request to the service", rt.ID, rt.Target, err)
		r.URL.Host = t.p.Service
		return tr.RoundTrip(r)
	}
	if err == nil {
		rt.n.Add(1)
	}
	return res, err
}

// upstreamFailed answers 502 when neither the target nor the service could be reached.
func (p *Proxy) upstreamFailed(w http.ResponseWriter, r *http.Request, err error) {
	if !errors.Is(err, context.Canceled) {
		p.logf("intercept proxy for %s: %s %s: %v", p.Service, r.Method, r.URL.Path, err)
	}
	w.WriteHeader(http.StatusBadGateway)
}

func (p *Proxy) logf(format string, args ...any) {
	if p.Logf != nil {
		p.Logf(format, args...)
	}
}
