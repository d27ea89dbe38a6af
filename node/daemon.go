package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"tailscale.com/tailcfg"
)

// Daemon keeps a Node up on a laptop and serves the local API that `meshctl up`, `down`,
// `status`, `ping` and `nc` use, on a unix socket only its owner may open.
type Daemon struct {
	StateDir string // required
	Socket   string // default StateDir/meshctl.sock
	TUN      string // kernel interface for the mesh; "" for userspace networking (see Node.TUN)
	Logf     func(format string, args ...any)

	mu   sync.Mutex // guards node
	node *Node
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

// Run serves until ctx ends. A daemon that was up when it stopped comes back up.
func (d *Daemon) Run(ctx context.Context) error {
	if err := os.MkdirAll(d.StateDir, 0o700); err != nil {
		return err
	}
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
	if cfg, err := d.loadConfig(); err == nil {
		go d.resume(ctx, cfg)
	}
	err = srv.Serve(ln)
	d.mu.Lock()
	if d.node != nil {
		d.node.Close()
	}
	d.mu.Unlock()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
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
		d.mu.Unlock()
		if n != nil {
			n.Close()
		}
		writeJSON(w, map[string]string{"state": "Stopped"})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		n, err := d.current()
		if err != nil {
			writeJSON(w, Summary{State: "Stopped"})
			return
		}
		st, err := n.Status(r.Context())
		if err != nil {
			httpError(w, http.StatusServiceUnavailable, err)
			return
		}
		writeJSON(w, Summarize(st))
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
	b, _ := json.Marshal(config{Coord: req.Coord, Hostname: req.Hostname})
	if err := os.WriteFile(d.configPath(), b, 0o600); err != nil {
		return Summary{}, err
	}
	return Summarize(st), nil
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
