package intercept_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/node/intercept"
)

// upstream is a real HTTP/1.1 + h2c server on loopback that answers with its name and counts
// what it got.
type upstream struct {
	name string
	addr string
	n    atomic.Int64
	mu   sync.Mutex
	seen []http.Header // request headers, in order
}

func newUpstream(t testing.TB, name string) *upstream {
	u := &upstream{name: name}
	mux := http.NewServeMux()
	mux.HandleFunc("/", u.hello)
	mux.HandleFunc("/echo", u.echo)
	mux.HandleFunc("/grpc", u.grpc)
	mux.HandleFunc("/upgrade", u.upgrade)
	u.addr = serve(t, mux)
	return u
}

// serve runs h on a loopback listener (HTTP/1.1 and h2c) until the test ends.
func serve(t testing.TB, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var ps http.Protocols
	ps.SetHTTP1(true)
	ps.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &ps}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

func (u *upstream) hello(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") == "h2c" { // as a server that takes h2c upgrades would
		u.upgrade(w, r)
		return
	}
	u.n.Add(1)
	u.mu.Lock()
	u.seen = append(u.seen, r.Header.Clone())
	u.mu.Unlock()
	fmt.Fprintf(w, "%s %s", u.name, r.Proto)
}

// echo streams back each line of the request body as it comes, prefixed with the name.
func (u *upstream) echo(w http.ResponseWriter, r *http.Request) {
	http.NewResponseController(w).EnableFullDuplex()
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		fmt.Fprintf(w, "%s %s\n", u.name, sc.Text())
		w.(http.Flusher).Flush()
	}
}

// grpc answers as a gRPC server does: HTTP/2 only, a body, then trailers.
func (u *upstream) grpc(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 {
		http.Error(w, "gRPC needs HTTP/2", http.StatusHTTPVersionNotSupported)
		return
	}
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
	fmt.Fprint(w, u.name)
	w.Header().Set("Grpc-Status", "0")
	w.Header().Set("Grpc-Message", "from "+u.name)
}

// upgrade switches protocols as a WebSocket (or h2c) server does, then echoes lines prefixed by name.
func (u *upstream) upgrade(w http.ResponseWriter, r *http.Request) {
	up := r.Header.Get("Upgrade")
	if up != "websocket" && up != "h2c" {
		http.Error(w, "upgrade to websocket or h2c", http.StatusBadRequest)
		return
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", up)
	rw.Flush()
	for {
		line, err := rw.ReadString('\n')
		if err != nil {
			return
		}
		fmt.Fprintf(rw, "%s %s", u.name, line)
		rw.Flush()
	}
}

// startProxy serves p on loopback until the test ends and returns its address.
func startProxy(t testing.TB, p *intercept.Proxy) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func alice(target string) intercept.Route {
	return intercept.Route{ID: "alice", Headers: []api.HeaderMatch{{Name: "x-dev", Value: "alice"}}, Target: target}
}

func get(t testing.TB, c *http.Client, url string, header ...string) string {
	t.Helper()
	body, err := tryGet(t.Context(), c, url, header...)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func tryGet(ctx context.Context, c *http.Client, url string, header ...string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	res, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s %v: %w", url, header, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

func h1Client() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 5 * time.Second}
}

func h2cClient() *http.Client {
	var ps http.Protocols
	ps.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &ps}, Timeout: 5 * time.Second}
}

// TestMixedRequests: of 200 requests on keep-alive connections, every third with X-Dev: alice
// (in whatever case, sometimes among other values), exactly those reach alice's workspace; the
// service sees the others as they were sent, no forwarding headers added or dropped.
func TestMixedRequests(t *testing.T) {
	svc, ws := newUpstream(t, "service"), newUpstream(t, "workspace")
	p := &intercept.Proxy{Service: svc.addr}
	p.SetRoutes([]intercept.Route{alice(ws.addr)})
	url := "http://" + startProxy(t, p) + "/"
	c := h1Client()
	for i := range 200 {
		want, h := "service HTTP/1.1", []string{"X-Dev", "bob", "X-Forwarded-For", "10.0.0.1"}
		if i%3 == 0 {
			want, h = "workspace HTTP/1.1", []string{"x-DEV", "carol", "X-Dev", "alice"}
		}
		if got := get(t, c, url, h...); got != want {
			t.Fatalf("request %d %v: %q, want %q", i, h, got, want)
		}
	}
	if ws.n.Load() != 67 || svc.n.Load() != 133 {
		t.Errorf("workspace got %d, service %d; want 67 and 133", ws.n.Load(), svc.n.Load())
	}
	if got := p.Requests()["alice"]; got != 67 {
		t.Errorf("Requests()[alice] = %d, want 67", got)
	}
	for _, h := range svc.seen {
		if xff := h.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != "10.0.0.1" || h.Get("X-Forwarded-Proto") != "" || h.Get("X-Forwarded-Host") != "" {
			t.Fatalf("the service saw forwarding headers %v, want the request's own X-Forwarded-For: 10.0.0.1 only", h)
		}
	}
}

// TestTwoRoutes: two users' routes on one service each get only their own requests; a route
// marked Down, or whose target does not answer, leaves its requests to the service.
func TestTwoRoutes(t *testing.T) {
	svc, wa, wb := newUpstream(t, "service"), newUpstream(t, "alice-ws"), newUpstream(t, "bob-ws")
	p := &intercept.Proxy{Service: svc.addr}
	bob := intercept.Route{ID: "bob", Headers: []api.HeaderMatch{{Name: "X-Dev", Value: "bob"}}, Target: wb.addr}
	p.SetRoutes([]intercept.Route{alice(wa.addr), bob})
	url := "http://" + startProxy(t, p) + "/"
	c := h1Client()
	for who, want := range map[string]string{"alice": "alice-ws", "bob": "bob-ws", "carol": "service"} {
		if got := get(t, c, url, "X-Dev", who); got != want+" HTTP/1.1" {
			t.Errorf("X-Dev: %s went to %q, want %s", who, got, want)
		}
	}

	bob.Down = true
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	dead.Close() // a port nothing listens on
	p.SetRoutes([]intercept.Route{alice(dead.Addr().String()), bob})
	for _, who := range []string{"alice", "bob"} {
		if got := get(t, c, url, "X-Dev", who); got != "service HTTP/1.1" {
			t.Errorf("X-Dev: %s, its target down, went to %q, want the service", who, got)
		}
	}
	if got := get(t, h2cClient(), url, "X-Dev", "alice"); got != "service HTTP/2.0" {
		t.Errorf("h2c, X-Dev: alice, its target not answering, went to %q, want the service", got)
	}
}

// TestH2C: h2c requests (prior knowledge) go to the target with the header, to the service
// without, over HTTP/2 both ways.
func TestH2C(t *testing.T) {
	svc, ws := newUpstream(t, "service"), newUpstream(t, "workspace")
	p := &intercept.Proxy{Service: svc.addr}
	p.SetRoutes([]intercept.Route{alice(ws.addr)})
	url := "http://" + startProxy(t, p) + "/"
	c := h2cClient()
	if got := get(t, c, url, "X-Dev", "alice"); got != "workspace HTTP/2.0" {
		t.Errorf("h2c with X-Dev: alice: %q", got)
	}
	if got := get(t, c, url); got != "service HTTP/2.0" {
		t.Errorf("h2c without the header: %q", got)
	}
}

// TestH2CUpgrade: a request asking to upgrade to h2c is answered as HTTP/1.1 (by the target
// with the header), and the next request on that connection is still routed on its own.
func TestH2CUpgrade(t *testing.T) {
	svc, ws := newUpstream(t, "service"), newUpstream(t, "workspace")
	p := &intercept.Proxy{Service: svc.addr}
	p.SetRoutes([]intercept.Route{alice(ws.addr)})
	conn, err := net.DialTimeout("tcp", startProxy(t, p), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	for _, tc := range []struct{ head, want string }{
		{"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-Dev: alice\r\n", "workspace HTTP/1.1"},
		{"", "service HTTP/1.1"},
	} {
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n%s\r\n", tc.head)
		res, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || string(b) != tc.want {
			t.Errorf("request with %q: %d %q, want 200 %q", tc.head, res.StatusCode, b, tc.want)
		}
	}
}

// TestGRPCTrailers: a gRPC-style h2c exchange passes with its trailers, to the target with
// the header and to the service without.
func TestGRPCTrailers(t *testing.T) {
	svc, ws := newUpstream(t, "service"), newUpstream(t, "workspace")
	p := &intercept.Proxy{Service: svc.addr}
	p.SetRoutes([]intercept.Route{alice(ws.addr)})
	url := "http://" + startProxy(t, p) + "/grpc"
	c := h2cClient()
	for _, tc := range []struct{ dev, want string }{{"alice", "workspace"}, {"bob", "service"}} {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", url, strings.NewReader("\x00\x00\x00\x00\x00"))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("X-Dev", tc.dev)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != tc.want || res.Trailer.Get("Grpc-Status") != "0" || res.Trailer.Get("Grpc-Message") != "from "+tc.want {
			t.Errorf("gRPC as %s: %d %q, trailers %v; want %s's body and trailers", tc.dev, res.StatusCode, b, res.Trailer, tc.want)
		}
	}
}

// TestUpgrade: a WebSocket-style upgrade with the header reaches the target and the
// connection then carries both ways; without it, the service.
func TestUpgrade(t *testing.T) {
	svc, ws := newUpstream(t, "service"), newUpstream(t, "workspace")
	p := &intercept.Proxy{Service: svc.addr}
	p.SetRoutes([]intercept.Route{alice(ws.addr)})
	addr := startProxy(t, p)
	for _, tc := range []struct{ dev, want string }{{"alice", "workspace"}, {"bob", "service"}} {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Dev: %s\r\n\r\n", tc.dev)
		r := bufio.NewReader(conn)
		res, err := http.ReadResponse(r, nil)
		if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade as %s: %v, %v", tc.dev, res, err)
		}
		for _, msg := range []string{"one", "two"} {
			fmt.Fprintln(conn, msg)
			if line, err := r.ReadString('\n'); err != nil || line != tc.want+" "+msg+"\n" {
				t.Errorf("upgraded as %s, sent %s, got %q, %v", tc.dev, msg, line, err)
			}
		}
	}
}

// TestStreaming: request and response bodies flow through the proxy as they are written, line
// by line, both ways at once (each answer arrives before the next line is sent).
func TestStreaming(t *testing.T) {
	svc, ws := newUpstream(t, "service"), newUpstream(t, "workspace")
	p := &intercept.Proxy{Service: svc.addr}
	p.SetRoutes([]intercept.Route{alice(ws.addr)})
	url := "http://" + startProxy(t, p) + "/echo"
	for _, tc := range []struct{ dev, want string }{{"alice", "workspace"}, {"bob", "service"}} {
		pr, pw := io.Pipe()
		req, _ := http.NewRequestWithContext(t.Context(), "POST", url, pr)
		req.Header.Set("X-Dev", tc.dev)
		res, err := h2cClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(res.Body)
		for i := range 3 {
			fmt.Fprintf(pw, "line %d\n", i)
			got, err := r.ReadString('\n')
			if want := fmt.Sprintf("%s line %d\n", tc.want, i); got != want || err != nil {
				t.Fatalf("as %s: line %d came back %q, %v; want %q before the next is sent", tc.dev, i, got, err, want)
			}
		}
		pw.Close()
		res.Body.Close()
	}
}

// TestSetRoutesUnderTraffic: routes change while requests flow (run with -race); every
// request is answered by the service or the target, none fails.
func TestSetRoutesUnderTraffic(t *testing.T) {
	svc, ws := newUpstream(t, "service"), newUpstream(t, "workspace")
	p := &intercept.Proxy{Service: svc.addr}
	url := "http://" + startProxy(t, p) + "/"
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			c := h1Client()
			for range 100 {
				got, err := tryGet(ctx, c, url, "X-Dev", "alice")
				if got != "service HTTP/1.1" && got != "workspace HTTP/1.1" {
					t.Errorf("answer %q, %v", got, err)
					return
				}
			}
		})
	}
	for i := 0; ctx.Err() == nil && i < 200; i++ {
		r := alice(ws.addr)
		r.Down = i%2 == 0
		p.SetRoutes([]intercept.Route{r})
		_ = p.Requests()
	}
	wg.Wait()
}

// TestProbe: a listening port answers the probe; a closed one does not.
func TestProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := intercept.Probe(t.Context(), nil, addr, time.Second); err != nil {
		t.Errorf("probe of a listening port: %v", err)
	}
	ln.Close()
	if err := intercept.Probe(t.Context(), nil, addr, time.Second); err == nil {
		t.Error("probe of a closed port succeeded")
	}
}
