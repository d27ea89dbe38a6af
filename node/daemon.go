package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
)

// Daemon keeps a Node up on a laptop and serves the local API that `meshctl up`, `down`,
// `status`, `ping` and `nc` use, on a unix socket only its owner may open.
type Daemon struct {
	StateDir string // required
	Socket   string // default StateDir/meshctl.sock
	TUN      string // kernel interface for the mesh; "" for userspace networking (see Node.TUN)
	// SOCKS5, in userspace mode, is the loopback address (127.0.0.1:1055) of a SOCKS5 proxy
	// into the mesh for the machine's programs; "" serves none. A busy address is logged
	// and the daemon runs without the proxy.
	SOCKS5 string
	// DNS, with a TUN, points the machine's resolver at MagicDNS while the node is up (by
	// rewriting ResolvConf), and puts the original back on down and when Run returns.
	DNS bool
	// ResolvConf is the file DNS rewrites; default /etc/resolv.conf.
	ResolvConf string
	Logf       func(format string, args ...any)

	mu       sync.Mutex // guards node and resolver
	node     *Node
	resolver *osResolver // non-nil while the OS resolver asks MagicDNS
	dnsErr   error       // why it does not, when it should
	socks    string      // the proxy's address while it serves; set before the API serves
}

// UpRequest asks the daemon to join a mesh.
type UpRequest struct {
	Coord    string `json:"coord"`
	AuthKey  string `json:"auth_key,omitempty"`
	Hostname string `json:"hostname,omitempty"`
}

// PingResult is the answer to a ping.
type PingResult struct {
	IP      string  `json:"ip"`
	Latency float64 `json:"latency_ms"`
	Path    string  `json:"path"` // "direct 198.18.0.5:41641" or "relayed via meshwork"
}

// config is what the daemon remembers between runs (never the auth key).
type config struct {
	Coord    string `json:"coord"`
	Hostname string `json:"hostname,omitempty"`
}

func (d *Daemon) socket() string {
	if d.Socket != "" {
		return d.Socket
	}
	return filepath.Join(d.StateDir, "meshctl.sock")
}

func (d *Daemon) logf(format string, args ...any) {
	if d.Logf != nil {
		d.Logf(format, args...)
	}
}

// lockFile, in a state directory, is held by the daemon using it.
const lockFile = "daemon.lock"

// LockState claims dir for this process until the returned file is closed: one daemon per
// state directory, since two would fight over the node's identity and its socket. The lock
// (an open file description lock) goes when the process does; the file holds its pid.
func LockState(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		f.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("another daemon (pid %d) is using %s: stop it first, or pass another --state", StatePID(dir), dir)
		}
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// StatePID is the pid of the process holding dir with LockState (-1 if it has not written
// it yet), or 0 when none does.
func StatePID(dir string) int {
	f, err := os.Open(filepath.Join(dir, lockFile))
	if err != nil {
		return 0
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil || lk.Type == unix.F_UNLCK {
		return 0
	}
	b, _ := io.ReadAll(f)
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
		return pid
	}
	return -1 // held, its pid not written yet
}

// Run serves until ctx ends. A daemon that was up when it stopped comes back up.
func (d *Daemon) Run(ctx context.Context) error {
	if err := os.MkdirAll(d.StateDir, 0o700); err != nil {
		return err
	}
	lock, err := LockState(d.StateDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	sock := d.socket()
	if c, err := net.Dial("unix", sock); err == nil {
		c.Close()
		return fmt.Errorf("a daemon already serves %s", sock)
	}
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: d.handler(), BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	d.logf("daemon: local API on %s", sock)
	stopSOCKS := d.serveSOCKS5()
	if cfg, err := d.loadConfig(); err == nil {
		go d.resume(ctx, cfg)
	}
	err = srv.Serve(ln)
	stopSOCKS()
	d.mu.Lock()
	if d.node != nil {
		d.node.Close()
	}
	d.restoreDNS()
	d.mu.Unlock()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// serveSOCKS5 starts the proxy in userspace mode and returns what stops it.
func (d *Daemon) serveSOCKS5() (stop func()) {
	if d.TUN != "" || d.SOCKS5 == "" {
		return func() {}
	}
	ln, err := net.Listen("tcp", d.SOCKS5)
	if err != nil {
		d.logf("daemon: no SOCKS5 proxy: %v (pass --socks5 ADDR, or \"\" for none)", err)
		return func() {}
	}
	d.socks = ln.Addr().String()
	p := &SOCKS5{Logf: d.Logf,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			n, err := d.current()
			if err != nil {
				return nil, err
			}
			return n.Dial(ctx, network, addr)
		},
		Resolve: d.resolve}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Serve(ln)
	}()
	d.logf("daemon: SOCKS5 proxy into the mesh on %s", d.socks)
	return func() {
		p.Close()
		<-done
	}
}

// resolve places a mesh name for the SOCKS5 proxy; a name under the mesh's domain that no
// peer has is ErrNoSuchHost, so the proxy does not ask the machine's resolvers about it.
func (d *Daemon) resolve(ctx context.Context, host string) (netip.Addr, error) {
	n, err := d.current()
	if err != nil {
		return netip.Addr{}, err
	}
	ip, err := n.Resolve(ctx, host)
	if err == nil {
		return ip, nil
	}
	if st, serr := n.Status(ctx); serr == nil && st.CurrentTailnet != nil && st.CurrentTailnet.MagicDNSSuffix != "" &&
		strings.HasSuffix(strings.TrimSuffix(host, "."), "."+st.CurrentTailnet.MagicDNSSuffix) {
		return netip.Addr{}, fmt.Errorf("%w: %v", ErrNoSuchHost, err)
	}
	return netip.Addr{}, err
}

// summary is what status and up answer: the node's view plus what the daemon serves.
func (d *Daemon) summary(st *ipnstate.Status) Summary {
	s := Summary{State: "Stopped"}
	if st != nil {
		s = Summarize(st)
	}
	s.SOCKS5 = d.socks
	d.mu.Lock()
	switch {
	case d.resolver != nil:
		s.DNS = d.resolver.Path + " → " + MagicDNS
	case d.dnsErr != nil:
		s.DNS = "off: " + d.dnsErr.Error()
	}
	d.mu.Unlock()
	return s
}

// pointDNS points the OS resolver at MagicDNS for the mesh's domain. Called with d.mu held.
func (d *Daemon) pointDNS(st *ipnstate.Status) error {
	if d.TUN == "" || !d.DNS {
		return nil
	}
	domain := ""
	if st.CurrentTailnet != nil {
		domain = st.CurrentTailnet.MagicDNSSuffix
	}
	if domain == "" && st.Self != nil {
		_, domain, _ = cutDot(strings.TrimSuffix(st.Self.DNSName, "."))
	}
	if domain == "" {
		return errors.New("dns: the mesh sent no domain")
	}
	r := d.resolver
	if r == nil {
		path := d.ResolvConf
		if path == "" {
			path = "/etc/resolv.conf"
		}
		r = &osResolver{Path: path, Backup: filepath.Join(d.StateDir, "resolv.conf.orig")}
	}
	if err := r.point(domain); err != nil {
		return err
	}
	if d.resolver == nil {
		d.logf("daemon: %s asks MagicDNS (%s) first, search %s", r.Path, MagicDNS, domain)
	}
	d.resolver = r
	return nil
}

// restoreDNS puts the original resolv.conf back. Called with d.mu held.
func (d *Daemon) restoreDNS() {
	if d.resolver == nil {
		return
	}
	if err := d.resolver.restore(); err != nil {
		d.logf("daemon: %v", err)
		return
	}
	d.logf("daemon: %s restored", d.resolver.Path)
	d.resolver = nil
}

func (d *Daemon) resume(ctx context.Context, cfg config) {
	if _, err := d.up(ctx, UpRequest{Coord: cfg.Coord, Hostname: cfg.Hostname}); err != nil {
		d.logf("daemon: rejoining %s: %v", cfg.Coord, err)
	}
}

func (d *Daemon) configPath() string { return filepath.Join(d.StateDir, "config.json") }

func (d *Daemon) loadConfig() (config, error) {
	var c config
	b, err := os.ReadFile(d.configPath())
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	return c, err
}

func (d *Daemon) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /up", func(w http.ResponseWriter, r *http.Request) {
		var req UpRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			httpError(w, http.StatusBadRequest, err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
		defer cancel()
		s, err := d.up(ctx, req)
		if err != nil {
			httpError(w, http.StatusBadGateway, err)
			return
		}
		writeJSON(w, s)
	})
	mux.HandleFunc("POST /down", func(w http.ResponseWriter, r *http.Request) {
		os.Remove(d.configPath())
		d.mu.Lock()
		n := d.node
		d.node = nil
		d.restoreDNS()
		d.mu.Unlock()
		if n != nil {
			n.Close()
		}
		writeJSON(w, map[string]string{"state": "Stopped"})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		n, err := d.current()
		if err != nil {
			writeJSON(w, d.summary(nil))
			return
		}
		st, err := n.Status(r.Context())
		if err != nil {
			httpError(w, http.StatusServiceUnavailable, err)
			return
		}
		writeJSON(w, d.summary(st))
	})
	mux.HandleFunc("POST /ping", d.servePing)
	mux.HandleFunc("POST /dial", d.serveDial)
	return mux
}

func (d *Daemon) current() (*Node, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.node == nil {
		return nil, ErrDown
	}
	return d.node, nil
}

func (d *Daemon) up(ctx context.Context, req UpRequest) (Summary, error) {
	if req.Coord == "" {
		return Summary{}, errors.New("no coord address: pass --coord URL")
	}
	d.mu.Lock()
	n := d.node
	if n != nil && n.ControlURL != req.Coord {
		n.Close()
		n = nil
	}
	if n == nil {
		n = &Node{ControlURL: req.Coord, AuthKey: req.AuthKey, Hostname: req.Hostname,
			Dir: filepath.Join(d.StateDir, "node"), TUN: d.TUN, ForwardToLocal: d.TUN == "", Logf: d.Logf}
		d.node = n
	}
	d.mu.Unlock()
	st, err := n.Up(ctx)
	if err != nil {
		return Summary{}, err
	}
	d.mu.Lock()
	if d.node == n {
		// The machine is on the mesh either way; status says why names do not resolve.
		if d.dnsErr = d.pointDNS(st); d.dnsErr != nil {
			d.logf("daemon: %v", d.dnsErr)
		}
	}
	d.mu.Unlock()
	b, _ := json.Marshal(config{Coord: req.Coord, Hostname: req.Hostname})
	if err := os.WriteFile(d.configPath(), b, 0o600); err != nil {
		return Summary{}, err
	}
	return d.summary(st), nil
}

func (d *Daemon) servePing(w http.ResponseWriter, r *http.Request) {
	var req struct{ Host string }
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	n, err := d.current()
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	ip, err := n.Resolve(ctx, req.Host)
	if err != nil {
		httpError(w, http.StatusNotFound, err)
		return
	}
	res, err := n.ping(ctx, ip)
	if err != nil {
		httpError(w, http.StatusGatewayTimeout, err)
		return
	}
	writeJSON(w, res)
}

// ping sends a disco ping (WireGuard-level reachability) and says which path it took.
func (n *Node) ping(ctx context.Context, ip netip.Addr) (PingResult, error) {
	ts, err := n.server()
	if err != nil {
		return PingResult{}, err
	}
	lc, err := ts.LocalClient()
	if err != nil {
		return PingResult{}, err
	}
	pr, err := lc.Ping(ctx, ip, tailcfg.PingDisco)
	if err != nil {
		return PingResult{}, err
	}
	if pr.Err != "" {
		return PingResult{}, errors.New(pr.Err)
	}
	res := PingResult{IP: ip.String(), Latency: pr.LatencySeconds * 1000}
	if pr.Endpoint != "" {
		res.Path = "direct " + pr.Endpoint
	} else {
		res.Path = "relayed via " + pr.DERPRegionCode
	}
	return res, nil
}

// serveDial connects the caller's socket to host:port over the mesh (meshctl nc): after a
// 200 status line the connection carries the stream both ways.
func (d *Daemon) serveDial(w http.ResponseWriter, r *http.Request) {
	addr := r.URL.Query().Get("addr")
	n, err := d.current()
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, err)
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		httpError(w, http.StatusBadRequest, fmt.Errorf("addr %q: want HOST:PORT", addr))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	ip, err := n.Resolve(ctx, host)
	if err != nil {
		httpError(w, http.StatusNotFound, err)
		return
	}
	remote, err := n.Dial(ctx, "tcp", net.JoinHostPort(ip.String(), port))
	if err != nil {
		httpError(w, http.StatusBadGateway, err)
		return
	}
	defer remote.Close()
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	buf.WriteString("HTTP/1.1 200 OK\r\n\r\n")
	buf.Flush()
	if n := buf.Reader.Buffered(); n > 0 {
		b, _ := buf.Reader.Peek(n)
		remote.Write(b)
	}
	splice(conn, remote)
}

// DialVia opens a stream to addr over the mesh through the daemon at socket.
func DialVia(socket, addr string) (net.Conn, error) {
	c, err := net.Dial("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("no daemon at %s: start one with meshctl up: %w", socket, err)
	}
	fmt.Fprintf(c, "POST /dial?addr=%s HTTP/1.1\r\nHost: local\r\nContent-Length: 0\r\n\r\n", addr)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		c.Close()
		return nil, fmt.Errorf("%s", strings.TrimSpace(e.Error))
	}
	return &bufConn{Conn: c, r: br}, nil
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// CloseWrite ends the stream toward the peer, keeping the way back open.
func (b *bufConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
