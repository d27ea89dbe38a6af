package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"meshwork.dev/coord/api"
	"meshwork.dev/node/sshd"
	"meshwork.dev/policy"
	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/wsnet"
)

// wsSSH is the agent's SSH server into its workspaces: one listener per running workspace,
// on port 22 of the workspace's own address (inside its network namespace), all served by one
// sshd.Server that knows callers by their mesh identity.
type wsSSH struct {
	srv      *sshd.Server
	sessions chan api.SessionReport // to coord, in order

	mu  sync.Mutex            // guards lns
	lns map[string]nsListener // by workspace name
}

// nsListener is a workspace's SSH listener and the network namespace it is bound in: a
// workspace whose namespace was made anew (its container recreated) needs a new one.
type nsListener struct {
	ln net.Listener
	ns nsID
}

// newSSH makes the SSH server, keeping host keys and recordings under dir.
func (a *agent) newSSH(rt Runtime, dir string) (*wsSSH, error) {
	s := &wsSSH{lns: map[string]nsListener{}, sessions: make(chan api.SessionReport, 256)}
	srv, err := sshd.New(sshd.Config{
		HostKeyDir: filepath.Join(dir, "hostkeys"),
		Recordings: filepath.Join(dir, "recordings"),
		WhoIs:      a.sshWhoIs,
		Allow:      a.sshAllow,
		Exec:       rt,
		Dial: func(ctx context.Context, ws, network, addr string) (net.Conn, error) {
			c, err := a.netConfig(ws)
			if err != nil {
				return nil, err
			}
			return wsnet.Dial(ctx, c, network, addr)
		},
		ListenIn: func(ctx context.Context, ws, network, addr string) (net.Listener, error) {
			c, err := a.netConfig(ws)
			if err != nil {
				return nil, err
			}
			return wsnet.Listen(c, network, addr)
		},
		AgentListen: func(ctx context.Context, ws string) (net.Listener, string, error) {
			return agentSocket(rt, ws)
		},
		OnSession: s.queue,
		OnAuthFailure: func(f sshd.AuthFailure) {
			if f.Blocked {
				s.queueBlock(f)
			}
		},
		Shield: a.shield(),
		Logf:   a.logf,
	})
	if err != nil {
		return nil, err
	}
	s.srv = srv
	return s, nil
}

// agentSocket listens for ssh -A's agent in the workspace's socket directory, for the
// workspace user, and returns the path processes inside see.
func agentSocket(rt Runtime, ws string) (net.Listener, string, error) {
	b := make([]byte, 8)
	rand.Read(b)
	name := "agent-" + hex.EncodeToString(b) + ".sock"
	path := filepath.Join(rt.SocketDir(ws), name)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, "", fmt.Errorf("agent forwarding: %w", err)
	}
	// The directory is the workspace's to write: its root may swap the socket for a link.
	if err := ctrd.GiveToUser(path, fs.ModeSocket, 0o600); err != nil {
		ln.Close()
		return nil, "", fmt.Errorf("agent forwarding: %w", err)
	}
	return ln, ctrd.SocketsPath + "/" + name, nil
}

// shield is the agent's shield settings with nftables doing the dropping.
func (a *agent) shield() sshd.ShieldConfig {
	c := a.Shield
	c.Block, c.Unblock = wsnet.Block, wsnet.Unblock
	return c
}

// queueBlock tells coord (for the audit log) that an address was blocked.
func (s *wsSSH) queueBlock(f sshd.AuthFailure) {
	s.send(api.SessionReport{Kind: "blocked", ID: fmt.Sprintf("block-%s-%d", f.Addr.Addr(), time.Now().UnixNano()),
		Workspace: f.Workspace, User: f.Identity.User, Node: f.Identity.Node, From: f.Addr.String(), Login: f.Login,
		Command: f.Reason, Start: time.Now()})
}

func (a *agent) sshWhoIs(ctx context.Context, remote netip.AddrPort) (sshd.Identity, error) {
	user, node, err := a.node.WhoIs(ctx, remote.String())
	return sshd.Identity{User: user, Node: node, Addr: remote}, err
}

// sshAllow lets a workspace's owner and admins in (as the workspace user, or as root), and
// whoever the policy's ssh rules grant the login.
func (a *agent) sshAllow(id sshd.Identity, ws, login string) error {
	st := a.current()
	spec := findWorkspace(st, ws)
	if spec == nil {
		return fmt.Errorf("no workspace %q on this machine", ws)
	}
	if id.User == spec.User || slices.Contains(st.Admins, id.User) {
		return nil
	}
	grants := make([]policy.SSHGrant, len(spec.SSH))
	for i, g := range spec.SSH {
		grants[i] = policy.SSHGrant(g)
	}
	if policy.Allows(grants, id.User, login, spec.User) {
		return nil
	}
	return fmt.Errorf("%s (%s) is not %s's owner (%s), nor an admin, nor granted %s by the policy's ssh rules", id.User, id.Node, ws, spec.User, login)
}

// netConfig is a workspace's network namespace, from what coord says of it.
func (a *agent) netConfig(ws string) (wsnet.Config, error) {
	spec := findWorkspace(a.current(), ws)
	if spec == nil {
		return wsnet.Config{}, fmt.Errorf("no workspace %q on this machine", ws)
	}
	s, err := runtimeSpec(&wsWish{spec: *spec})
	return ctrd.NetConfig(s), err
}

// up serves SSH for a running workspace (if not yet in its current network namespace) and
// returns its host key.
func (s *wsSSH) up(a *agent, spec ctrd.Spec) (string, error) {
	key, err := s.srv.HostKey(spec.Name)
	if err != nil {
		return "", err
	}
	if err := s.listen(a, spec); err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(gossh.MarshalAuthorizedKey(key))), nil
}

// listen binds port 22 in the workspace's namespace unless a listener is bound there already;
// one left in a namespace that is gone is closed.
func (s *wsSSH) listen(a *agent, spec ctrd.Spec) error {
	c := ctrd.NetConfig(spec)
	ns, err := netnsID(c)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.lns[spec.Name]
	if ok && old.ns == ns {
		return nil
	}
	if ok {
		a.logf("agent: %s: its network namespace was made anew; serving ssh in the new one", spec.Name)
		old.ln.Close()
		delete(s.lns, spec.Name)
	}
	ln, err := wsnet.Listen(c, "tcp", ":22")
	if err != nil {
		return err
	}
	s.lns[spec.Name] = nsListener{ln: ln, ns: ns}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		s.srv.Serve(ln, spec.Name)
	}()
	return nil
}

// down stops serving SSH for a workspace that stopped or went.
func (s *wsSSH) down(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.lns[name]; ok {
		l.ln.Close()
		delete(s.lns, name)
	}
}

// queue hands a session event to the uploader without blocking the session.
func (s *wsSSH) queue(ev sshd.SessionEvent) {
	rep := api.SessionReport{Kind: ev.Kind, ID: ev.ID, Workspace: ev.Workspace, User: ev.Identity.User, Node: ev.Identity.Node,
		From: ev.Identity.Addr.String(), Login: ev.Login, Command: ev.Command, PTY: ev.PTY, Start: ev.Start,
		Duration: ev.Duration, BytesIn: ev.BytesIn, BytesOut: ev.BytesOut, ExitCode: ev.ExitCode}
	if ev.Subsystem != "" {
		rep.Command = "(" + ev.Subsystem + ")"
	}
	if ev.Recording != "" {
		rep.Cast, rep.CastSize, rep.Truncated = compressCast(ev.Recording)
	}
	s.send(rep)
}

func (s *wsSSH) send(rep api.SessionReport) {
	select {
	case s.sessions <- rep:
	default: // coord has been away long enough to fill the queue: the log line must do
		fmt.Fprintf(os.Stderr, "agent: ssh %s %s not reported: queue full\n", rep.Kind, rep.ID)
	}
}

// maxCast is the most of a compressed recording coord keeps.
const maxCast = 1 << 20

// compressCast gzips a recording, cut to what coord keeps, and removes the file.
func compressCast(path string) (cast []byte, size int64, truncated bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, false
	}
	defer os.Remove(path)
	for {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(b)
		zw.Close()
		if z.Len() <= maxCast {
			return z.Bytes(), int64(len(b)), truncated
		}
		b, truncated = b[:bytes.LastIndexByte(b[:len(b)*3/4], '\n')+1], true
	}
}

// uploadSessions sends session reports to coord, in order, each retried until it lands.
func (s *wsSSH) uploadSessions(ctx context.Context, a *agent, src source) {
	defer a.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case rep := <-s.sessions:
			for fails := 0; ctx.Err() == nil; fails++ {
				err := src.session(ctx, &rep)
				if err == nil {
					break
				}
				a.logf("agent: reporting ssh session %s: %v", rep.ID, err)
				if fails >= 10 {
					break // coord refuses it: the log must do
				}
				sleep(ctx, backoff(fails+1))
			}
		}
	}
}

// close stops every listener and session.
func (s *wsSSH) close() {
	s.srv.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, l := range s.lns {
		l.ln.Close()
		delete(s.lns, n)
	}
}

// findWorkspace finds a workspace in coord's state for the machine by name; nil if none.
func findWorkspace(st *api.MachineState, name string) *api.WorkspaceSpec {
	if st == nil {
		return nil
	}
	if i := slices.IndexFunc(st.Workspaces, func(w api.WorkspaceSpec) bool { return w.Name == name }); i >= 0 {
		return &st.Workspaces[i]
	}
	return nil
}
