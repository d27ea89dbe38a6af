// Package sshd is the SSH server into workspaces: it authenticates callers by their mesh identity
// instead of keys or passwords, runs their sessions inside the workspace through an Executor,
// forwards ports through the workspace's network view, records PTY sessions as asciicast v2 and
// blocks addresses that keep failing to authenticate.
package sshd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"meshwork.dev/workspace/wsexec"
)

// Identity is who is calling, from the mesh: the agent looks the source address up (WhoIs).
type Identity struct {
	User string         // the mesh user, e.g. "alice@example.com"
	Node string         // the caller's mesh node name
	Addr netip.AddrPort // the source address of the connection
}

// Executor runs processes inside a workspace: workspace/ctrd.Runtime in the agent, a fake in
// tests.
type Executor interface {
	Exec(ctx context.Context, workspace string, s wsexec.Spec) (wsexec.Process, error)
}

// Config configures a Server. WhoIs, Allow and Exec are required.
type Config struct {
	// HostKeyDir holds one ed25519 host key per workspace, HostKeyDir/<workspace>.key (0600, the
	// OpenSSH private key format), made on first use and stable across restarts. "": host keys
	// live in memory only and change with every Server.
	HostKeyDir string

	// WhoIs tells who is at a remote address on the mesh.
	WhoIs func(ctx context.Context, remote netip.AddrPort) (Identity, error)

	// Allow returns nil when id may log in to workspace as login (the agent checks ownership and
	// policy). Its error's text is logged and passed to OnAuthFailure; the client only sees an
	// authentication failure. Login "root" runs processes as root.
	Allow func(id Identity, workspace, login string) error

	// Exec runs sessions in workspaces.
	Exec Executor

	// Shell runs sessions: a shell request runs Shell -l, an exec request Shell -c COMMAND.
	// Default "/bin/sh".
	Shell string

	// Dial opens -L (direct-tcpip) connections from inside the workspace's network view.
	// nil: local forwarding is refused.
	Dial func(ctx context.Context, workspace, network, addr string) (net.Conn, error)

	// ListenIn listens inside the workspace for -R (tcpip-forward). nil: remote forwarding is
	// refused. The listener is closed when the client cancels the forward or disconnects.
	ListenIn func(ctx context.Context, workspace, network, addr string) (net.Listener, error)

	// AgentListen listens on a unix socket inside workspace for ssh -A and returns the socket's
	// path as processes in the workspace see it (SSH_AUTH_SOCK). The Server closes the listener
	// when the session ends. nil: agent forwarding is refused.
	AgentListen func(ctx context.Context, workspace string) (ln net.Listener, path string, err error)

	// Recordings is the directory for asciicast v2 files of PTY sessions,
	// Recordings/<session id>.cast. "": no recording.
	Recordings string

	// MaxRecording bounds one recording's size in bytes; past it recording stops with a marker.
	// Default 64 MiB.
	MaxRecording int64

	// OnSession is told the start and end of every session (audit log, recording upload). It is
	// called synchronously: keep it quick.
	OnSession func(SessionEvent)

	// OnAuthFailure is told of every refused connection attempt (audit log); it may be nil.
	OnAuthFailure func(AuthFailure)

	// Shield blocks addresses that keep failing to authenticate.
	Shield ShieldConfig

	// Logf logs; nil discards.
	Logf func(format string, args ...any)
}

// SessionEvent is the start ("start") or end ("end") of a session.
type SessionEvent struct {
	ID        string
	Kind      string // "start" or "end"
	Identity  Identity
	Workspace string
	Login     string
	Command   string // the exec request's command; "" for a shell
	Subsystem string // "sftp" for the sftp subsystem
	PTY       bool
	Start     time.Time
	Duration  time.Duration // on end
	BytesIn   int64         // from the client, on end
	BytesOut  int64         // to the client, on end
	ExitCode  int           // on end; -1 if the process never started
	Recording string        // path of the asciicast file, on end; "" when not recorded
}

// AuthFailure is one refused authentication, for the audit log.
type AuthFailure struct {
	Addr      netip.AddrPort
	Identity  Identity // zero when WhoIs failed
	Workspace string
	Login     string
	Reason    string
	Blocked   bool // this failure made the shield block Addr
}

// Server serves SSH for workspaces. Make it with New.
type Server struct {
	c      Config
	keys   *hostKeys
	shield *shield

	mu     sync.Mutex
	closed bool                    // set by Close; no new goroutines after it
	lns    map[net.Listener]bool   // listeners in Serve
	conns  map[net.Conn]bool       // accepted connections
	wg     sync.WaitGroup          // every goroutine the Server starts
	done   chan struct{}           // closed by Close
	ctx    context.Context         // good until Close
	cancel context.CancelFunc      // ends ctx
	glider map[string]*gliderEntry // per workspace, shared by its Serve calls
}

type gliderEntry struct {
	srv  *gliderssh.Server
	refs int
}

// New checks c and returns a Server.
func New(c Config) (*Server, error) {
	if c.WhoIs == nil || c.Allow == nil || c.Exec == nil {
		return nil, errors.New("sshd: Config needs WhoIs, Allow and Exec")
	}
	if c.Shell == "" {
		c.Shell = "/bin/sh"
	}
	if c.MaxRecording == 0 {
		c.MaxRecording = 64 << 20
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	if c.HostKeyDir != "" {
		if err := os.MkdirAll(c.HostKeyDir, 0o700); err != nil {
			return nil, fmt.Errorf("sshd: host key dir: %w", err)
		}
	}
	if c.Recordings != "" {
		if err := os.MkdirAll(c.Recordings, 0o700); err != nil {
			return nil, fmt.Errorf("sshd: recordings dir: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		c:      c,
		keys:   newHostKeys(c.HostKeyDir),
		lns:    map[net.Listener]bool{},
		conns:  map[net.Conn]bool{},
		done:   make(chan struct{}),
		ctx:    ctx,
		cancel: cancel,
		glider: map[string]*gliderEntry{},
	}
	s.shield = newShield(c.Shield, c.Logf)
	return s, nil
}

// ErrClosed is returned by Serve once the Server is closed.
var ErrClosed = errors.New("sshd: server closed")

// Serve answers SSH connections on ln for workspace. It returns nil when ln is closed,
// ErrClosed when the Server is, and closes ln before it returns.
func (s *Server) Serve(ln net.Listener, workspace string) error {
	defer ln.Close()
	if _, err := s.keys.signer(workspace); err != nil {
		return err
	}
	srv, err := s.acquire(ln, workspace)
	if err != nil {
		return err
	}
	defer s.release(ln, workspace)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("sshd: serve %s: %w", workspace, err)
		}
		if !s.goTrack(func() { s.handleConn(srv, conn) }) {
			conn.Close()
		}
	}
}

// handleConn refuses shielded addresses, then hands conn to gliderlabs until it closes.
func (s *Server) handleConn(srv *gliderssh.Server, conn net.Conn) {
	if !s.trackConn(conn, true) {
		conn.Close()
		return
	}
	defer s.trackConn(conn, false)
	if ap := addrPort(conn.RemoteAddr()); s.shield.blocked(ap.Addr()) {
		s.c.Logf("sshd: refused %v: blocked by the shield", ap)
		conn.Close()
		return
	}
	srv.HandleConn(conn)
}

// acquire registers ln and returns the gliderlabs server for workspace.
func (s *Server) acquire(ln net.Listener, workspace string) (*gliderssh.Server, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	s.lns[ln] = true
	e := s.glider[workspace]
	if e == nil {
		e = &gliderEntry{srv: s.newGlider(workspace)}
		s.glider[workspace] = e
	}
	e.refs++
	return e.srv, nil
}

func (s *Server) release(ln net.Listener, workspace string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.lns, ln)
	if e := s.glider[workspace]; e != nil {
		if e.refs--; e.refs == 0 {
			delete(s.glider, workspace)
		}
	}
}

// newGlider makes the gliderlabs server for one workspace: its host key, our authentication
// and our channel and request handlers (none of gliderlabs' defaults).
func (s *Server) newGlider(workspace string) *gliderssh.Server {
	signer, _ := s.keys.signer(workspace) // made by Serve already
	a := &auth{s: s, workspace: workspace}
	return &gliderssh.Server{
		HostSigners:          []gliderssh.Signer{signer},
		Version:              "Meshwork",
		ServerConfigCallback: a.serverConfig,
		ChannelHandlers: map[string]gliderssh.ChannelHandler{
			"session":      s.channel(workspace, s.handleSession),
			"direct-tcpip": s.channel(workspace, s.handleDirectTCPIP),
		},
		RequestHandlers: map[string]gliderssh.RequestHandler{
			"tcpip-forward":        s.request(workspace, s.tcpipForward),
			"cancel-tcpip-forward": s.request(workspace, s.cancelForward),
		},
	}
}

// chanHandler handles one channel of an authenticated connection.
type chanHandler func(ctx gliderssh.Context, conn *gossh.ServerConn, nc gossh.NewChannel, workspace string)

// channel adapts h to gliderlabs, tracking its goroutine.
func (s *Server) channel(workspace string, h chanHandler) gliderssh.ChannelHandler {
	return func(_ *gliderssh.Server, conn *gossh.ServerConn, nc gossh.NewChannel, ctx gliderssh.Context) {
		if !s.track() {
			nc.Reject(gossh.ResourceShortage, "server closing")
			return
		}
		defer s.wg.Done()
		h(ctx, conn, nc, workspace)
	}
}

// request adapts a global request handler to gliderlabs.
func (s *Server) request(workspace string, h func(gliderssh.Context, string, *gossh.Request) (bool, []byte)) gliderssh.RequestHandler {
	return func(ctx gliderssh.Context, _ *gliderssh.Server, req *gossh.Request) (bool, []byte) {
		return h(ctx, workspace, req)
	}
}

// track counts one more goroutine unless the Server is closed; the caller calls s.wg.Done.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// goTrack runs f in a tracked goroutine; false if the Server is closed.
func (s *Server) goTrack(f func()) bool {
	if !s.track() {
		return false
	}
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

func (s *Server) trackConn(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		return true
	}
	if s.closed {
		return false
	}
	s.conns[c] = true
	return true
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// HostKey returns workspace's host public key, for known_hosts, making the key if needed.
func (s *Server) HostKey(workspace string) (gossh.PublicKey, error) {
	signer, err := s.keys.signer(workspace)
	if err != nil {
		return nil, err
	}
	return signer.PublicKey(), nil
}

// Blocked lists the addresses the shield blocks now.
func (s *Server) Blocked() []Block { return s.shield.list() }

// Unblock lifts the shield's block of addr (and calls ShieldConfig.Unblock).
func (s *Server) Unblock(addr netip.Addr) error { return s.shield.unblock(addr) }

// Close closes the listeners, connections and sessions (processes still running get SIGHUP,
// then SIGKILL), lifts the shield's blocks, and returns once every goroutine it started is gone.
// It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.cancel()
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return s.shield.close()
}

// addrPort turns a net.Addr into a netip.AddrPort, unmapping IPv4-in-IPv6.
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
