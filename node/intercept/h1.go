package intercept

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
)

// The HTTP/1.1 path: most requests are plain HTTP/1.1 without a body or an upgrade, and for those the
// proxy writes the request to a kept-alive upstream connection and copies the answer back in
// the handler's own goroutine, without http.Transport's per-request goroutine hand-offs
// (what a non-matching request pays for the proxy is the bench's figure). Requests with a
// body (which may stream both ways at once), upgrades and HTTP/2 take httputil.ReverseProxy.

// hopHeaders are the hop-by-hop headers of RFC 9110 7.6.1: they concern one connection and
// are not forwarded.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// h1Conn is a kept-alive upstream connection.
type h1Conn struct {
	net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

// h1Pool keeps idle upstream connections by address.
type h1Pool struct {
	mu   sync.Mutex
	idle map[string][]*h1Conn
}

const maxIdlePerAddr = 64

func (p *h1Pool) get(addr string) *h1Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.idle[addr]
	if len(cs) == 0 {
		return nil
	}
	c := cs[len(cs)-1]
	p.idle[addr] = cs[:len(cs)-1]
	return c
}

func (p *h1Pool) put(addr string, c *h1Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle == nil {
		p.idle = map[string][]*h1Conn{}
	}
	if len(p.idle[addr]) >= maxIdlePerAddr {
		c.Close()
		return
	}
	p.idle[addr] = append(p.idle[addr], c)
}

func (p *h1Pool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cs := range p.idle {
		for _, c := range cs {
			c.Close()
		}
	}
	p.idle = nil
}

// plainH1 reports whether r takes the HTTP/1.1 path.
func plainH1(r *http.Request) bool {
	return r.ProtoMajor == 1 && r.ContentLength == 0 && r.Method != http.MethodConnect && r.Header.Get("Upgrade") == "" &&
		!strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

// serveH1 proxies r to its route's target (the service when none matches, or when the target
// cannot be dialled) over HTTP/1.1.
func (p *Proxy) serveH1(w http.ResponseWriter, r *http.Request) {
	rt := p.match(r)
	addr := p.Service
	if rt != nil {
		addr = rt.Target
	}
	removeHopHeaders(r.Header)
	r.Close = false
	c, reused, err := p.h1Upstream(r, addr)
	if err != nil && rt != nil && errors.As(err, new(dialError)) {
		p.logf("intercept %s: target %s: %v: sending the request to the service", rt.ID, rt.Target, err)
		rt, addr = nil, p.Service
		c, reused, err = p.h1Upstream(r, addr)
	}
	if err != nil {
		p.upstreamFailed(w, r, err)
		return
	}
	res, err := p.h1RoundTrip(c, r)
	if err != nil && reused {
		// A kept-alive connection the upstream had closed: once more on a new one.
		c.Close()
		if c, _, err = p.h1Upstream(r, addr); err == nil {
			res, err = p.h1RoundTrip(c, r)
		}
	}
	if err != nil {
		if c != nil {
			c.Close()
		}
		p.upstreamFailed(w, r, err)
		return
	}
	if rt != nil {
		rt.n.Add(1)
	}
	p.h1Respond(w, res, c, addr)
}

// h1Upstream is a connection to addr: a kept-alive one, or a new one.
func (p *Proxy) h1Upstream(r *http.Request, addr string) (c *h1Conn, reused bool, err error) {
	if c := p.pool.get(addr); c != nil {
		return c, true, nil
	}
	nc, err := p.dial(r.Context(), "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return &h1Conn{Conn: nc, br: bufio.NewReaderSize(nc, 16<<10), bw: bufio.NewWriterSize(nc, 16<<10)}, false, nil
}

// h1RoundTrip writes r to c and reads the answer's head.
func (p *Proxy) h1RoundTrip(c *h1Conn, r *http.Request) (*http.Response, error) {
	if err := r.Write(c.bw); err != nil {
		return nil, err
	}
	if err := c.bw.Flush(); err != nil {
		return nil, err
	}
	return http.ReadResponse(c.br, r)
}

// h1Respond copies res to w, flushing as the body comes (streams stay streams), and keeps c
// for the next request when the answer ended cleanly.
func (p *Proxy) h1Respond(w http.ResponseWriter, res *http.Response, c *h1Conn, addr string) {
	removeHopHeaders(res.Header)
	h := w.Header()
	for k, v := range res.Header {
		h[k] = v
	}
	for k := range res.Trailer {
		h.Add("Trailer", k)
	}
	w.WriteHeader(res.StatusCode)
	err := copyFlushing(w, res.Body)
	res.Body.Close()
	for k, v := range res.Trailer {
		h[http.TrailerPrefix+k] = v
	}
	if err != nil || res.Close {
		c.Close()
		return
	}
	p.pool.put(addr, c)
}

// copyFlushing copies body to w, flushing after every read: the client sees what the
// upstream sent as soon as it sent it.
func copyFlushing(w http.ResponseWriter, body io.Reader) error {
	rc := http.NewResponseController(w)
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if err == nil {
				rc.Flush()
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// removeHopHeaders drops the hop-by-hop headers and those Connection names.
func removeHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}
