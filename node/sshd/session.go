package sshd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"meshwork.dev/workspace/wsexec"
)

// SFTPServer is what the sftp subsystem runs inside the workspace; the agent puts meshctl there.
var SFTPServer = []string{"/.meshwork/meshctl", "sftp-server"}

const (
	maxEnv      = 256             // env requests kept per session
	hangupGrace = 2 * time.Second // SIGHUP to SIGKILL when the client goes away
)

// session is one "session" channel: requests until shell, exec or subsystem, then a process.
type session struct {
	s         *Server
	ch        gossh.Channel
	conn      *gossh.ServerConn
	workspace string
	ev        SessionEvent // the start event, filled in by start

	// Touched by the request loop only.
	env       []string
	pty       *ptyRequest
	wantAgent bool
	started   bool

	procMu sync.Mutex
	proc   wsexec.Process // guarded by procMu; nil until started
	size   [2]uint16      // guarded by procMu: the latest terminal size
	rec    *recorder      // nil unless recording; its own lock
	exited chan struct{}  // closed when the process has exited (or never started)
	// replied is closed once the request that started the process has its reply: a process
	// that exits at once must not close the channel first (the client's exec would fail
	// with EOF instead of giving the exit status).
	replied chan struct{}
	code    int // exit code, written before exited closes

	wg       sync.WaitGroup // the process's goroutines
	bytesIn  atomic.Int64
	bytesOut atomic.Int64
}

type ptyRequest struct {
	Term          string
	Columns, Rows uint32
	Width, Height uint32
	Modes         string
}

type windowChange struct {
	Columns, Rows uint32
	Width, Height uint32
}

func (s *Server) handleSession(ctx gliderssh.Context, conn *gossh.ServerConn, nc gossh.NewChannel, workspace string) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	ss := &session{s: s, ch: ch, conn: conn, workspace: workspace, exited: make(chan struct{}), replied: make(chan struct{}), code: -1}
	ss.ev = SessionEvent{ID: newID(), Identity: identityOf(ctx), Workspace: workspace, Login: conn.User()}
	sctx, cancel := context.WithCancel(ctx) // the process's; ends with the session
	for req := range reqs {
		starting := !ss.started
		req.Reply(ss.request(sctx, req), nil)
		if starting && ss.started {
			close(ss.replied) // now the process's exit may close the channel
		}
	}
	ss.hangup()
	cancel()
	ss.wg.Wait()
	ch.Close()
	if ss.started {
		ss.end()
	}
}

// request handles one channel request and says whether it succeeded.
func (ss *session) request(ctx context.Context, req *gossh.Request) bool {
	switch req.Type {
	case "pty-req":
		var p ptyRequest
		if ss.started || ss.pty != nil || gossh.Unmarshal(req.Payload, &p) != nil {
			return false
		}
		ss.pty = &p
		ss.size = [2]uint16{clamp16(p.Columns), clamp16(p.Rows)}
		return true
	case "env":
		var kv struct{ Name, Value string }
		if ss.started || len(ss.env) >= maxEnv || gossh.Unmarshal(req.Payload, &kv) != nil {
			return false
		}
		ss.env = append(ss.env, kv.Name+"="+kv.Value)
		return true
	case "window-change":
		var w windowChange
		if ss.pty == nil || gossh.Unmarshal(req.Payload, &w) != nil {
			return false
		}
		ss.resize(clamp16(w.Columns), clamp16(w.Rows))
		return true
	case "signal":
		var sig struct{ Signal string }
		if gossh.Unmarshal(req.Payload, &sig) != nil {
			return false
		}
		return ss.signal(sig.Signal)
	case "shell", "exec", "subsystem":
		if ss.started {
			return false
		}
		var cmd struct{ Value string }
		if req.Type != "shell" && gossh.Unmarshal(req.Payload, &cmd) != nil {
			return false
		}
		return ss.start(ctx, req.Type, cmd.Value)
	case "auth-agent-req@openssh.com":
		// Without AgentListen, OpenSSH says "agent forwarding request failed" and logs in anyway.
		ss.wantAgent = !ss.started && ss.s.c.AgentListen != nil
		return ss.wantAgent
	default:
		return false
	}
}

// spec builds the wsexec.Spec for a shell, exec or subsystem request.
func (ss *session) spec(kind, value string) (wsexec.Spec, bool) {
	sp := wsexec.Spec{Root: ss.conn.User() == "root", Env: ss.baseEnv()}
	switch kind {
	case "shell":
		sp.Args = []string{ss.s.c.Shell, "-l"}
	case "exec":
		sp.Args = []string{ss.s.c.Shell, "-c", value}
		ss.ev.Command = value
	case "subsystem":
		if value != "sftp" {
			return sp, false
		}
		sp.Args = append([]string(nil), SFTPServer...)
		ss.ev.Subsystem = value
		return sp, true // no terminal for sftp, even if one was asked for
	}
	if ss.pty != nil {
		sp.TTY = true
		sp.Width, sp.Height = ss.size[0], ss.size[1]
		sp.Env = append(sp.Env, "TERM="+ss.pty.Term)
	}
	return sp, true
}

// baseEnv is the client's env requests plus what sshd sets.
func (ss *session) baseEnv() []string {
	env := append([]string(nil), ss.env...)
	local, remote := addrPort(ss.conn.LocalAddr()), addrPort(ss.conn.RemoteAddr())
	env = append(env,
		fmt.Sprintf("SSH_CLIENT=%s %d %d", remote.Addr(), remote.Port(), local.Port()),
		fmt.Sprintf("SSH_CONNECTION=%s %d %s %d", remote.Addr(), remote.Port(), local.Addr(), local.Port()),
	)
	return env
}

// start runs the process for a shell, exec or subsystem request.
func (ss *session) start(ctx context.Context, kind, value string) bool {
	sp, ok := ss.spec(kind, value)
	if !ok {
		return false
	}
	ss.started = true
	ss.ev.Kind, ss.ev.PTY, ss.ev.Start = "start", sp.TTY, time.Now()
	if sp.TTY && ss.s.c.Recordings != "" {
		ss.openRecording(sp)
	}
	stdinR, stdinW := io.Pipe()
	stdin := &eofReader{r: stdinR, eof: make(chan struct{})}
	out := &chanWriter{w: ss.ch, n: &ss.bytesOut, rec: ss.rec}
	sp.Stdin, sp.Stdout, sp.Stderr = stdin, out, out
	if !sp.TTY {
		sp.Stderr = &chanWriter{w: ss.ch.Stderr(), n: &ss.bytesOut}
	}
	if ss.wantAgent && sp.Args[0] != SFTPServer[0] {
		sp.Env = append(sp.Env, ss.forwardAgent(ctx)...)
	}
	ss.emit(ss.ev)

	proc, err := ss.s.c.Exec.Exec(ctx, ss.workspace, sp)
	if err != nil {
		ss.s.c.Logf("sshd: %s: session %s: exec %q: %v", ss.workspace, ss.ev.ID, sp.Args, err)
		fmt.Fprintf(ss.ch.Stderr(), "meshwork: cannot start %s in %s: %v\r\n", kind, ss.workspace, err)
		close(ss.exited)
		stdinW.Close()
		return false
	}
	ss.procMu.Lock()
	ss.proc = proc
	ss.procMu.Unlock()
	ss.wg.Add(2)
	go ss.copyStdin(stdinW, stdin.eof, proc)
	go ss.wait(proc, stdinW)
	return true
}

// copyStdin copies the client's input to the process until the client's EOF or the process's
// exit. After the client's EOF, once the executor has read that EOF (so it has passed on all
// the input before it), it closes the process's stdin.
func (ss *session) copyStdin(w *io.PipeWriter, executorEOF <-chan struct{}, proc wsexec.Process) {
	defer ss.wg.Done()
	in := &countingReader{r: ss.ch, n: &ss.bytesIn, rec: ss.rec}
	_, err := io.Copy(w, in)
	w.Close()
	if err != nil { // the pipe closed: the process has exited
		return
	}
	select {
	case <-ss.exited:
	case <-executorEOF:
		if err := proc.CloseStdin(); err != nil {
			ss.s.c.Logf("sshd: %s: session %s: close stdin: %v", ss.workspace, ss.ev.ID, err)
		}
	}
}

// eofReader closes eof when its reader first returns io.EOF.
type eofReader struct {
	r    io.Reader
	eof  chan struct{}
	once sync.Once
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.once.Do(func() { close(e.eof) })
	}
	return n, err
}

// wait waits for the process, then reports its exit to the client and closes the channel.
func (ss *session) wait(proc wsexec.Process, stdin *io.PipeWriter) {
	defer ss.wg.Done()
	code, err := proc.Wait()
	ss.code = code
	close(ss.exited)
	stdin.Close()
	<-ss.replied
	ss.ch.CloseWrite()
	var se *wsexec.SignalError
	if errors.As(err, &se) {
		// As OpenSSH's sshd: a process a signal ended has no exit status, only its signal
		// (OpenSSH's client then says so and exits 255; Go's reports 128+signal).
		msg := struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{signalName(se.Signal), se.CoreDumped, se.Error(), ""}
		ss.ch.SendRequest("exit-signal", false, gossh.Marshal(msg))
		ss.ch.Close()
		return
	}
	if err != nil {
		ss.s.c.Logf("sshd: %s: session %s: wait: %v", ss.workspace, ss.ev.ID, err)
	}
	if code < 0 {
		code = 255
	}
	ss.ch.SendRequest("exit-status", false, gossh.Marshal(struct{ Status uint32 }{uint32(code)}))
	ss.ch.Close()
}

// forwardAgent listens for agent clients inside the workspace and returns the env that points
// processes at the socket. Each connection becomes an auth-agent@openssh.com channel to the
// client. The listener closes when ctx ends (with the session).
func (ss *session) forwardAgent(ctx context.Context) []string {
	ln, path, err := ss.s.c.AgentListen(ctx, ss.workspace)
	if err != nil {
		ss.s.c.Logf("sshd: %s: session %s: agent forwarding: %v", ss.workspace, ss.ev.ID, err)
		return nil
	}
	ss.wg.Add(2)
	go func() {
		defer ss.wg.Done()
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		defer ss.wg.Done()
		ss.acceptAgent(ln)
	}()
	return []string{"SSH_AUTH_SOCK=" + path}
}

func (ss *session) acceptAgent(ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch, reqs, err := ss.conn.OpenChannel("auth-agent@openssh.com", nil)
			if err != nil {
				c.Close()
				return
			}
			go gossh.DiscardRequests(reqs)
			splice(ch, c)
		}()
	}
}

// hangup ends a process whose client went away: SIGHUP, then SIGKILL after hangupGrace.
func (ss *session) hangup() {
	if !ss.started {
		return
	}
	select {
	case <-ss.exited:
		return
	default:
	}
	ss.signalProc(syscall.SIGHUP)
	t := time.NewTimer(hangupGrace)
	defer t.Stop()
	select {
	case <-ss.exited:
	case <-t.C:
		ss.signalProc(syscall.SIGKILL)
	}
}

func (ss *session) signal(name string) bool {
	sig, ok := signals[name]
	return ok && ss.signalProc(sig) == nil
}

func (ss *session) signalProc(sig syscall.Signal) error {
	ss.procMu.Lock()
	proc := ss.proc
	ss.procMu.Unlock()
	if proc == nil {
		return fmt.Errorf("no process")
	}
	return proc.Signal(sig)
}

func (ss *session) resize(w, h uint16) {
	ss.procMu.Lock()
	ss.size = [2]uint16{w, h}
	proc := ss.proc
	ss.procMu.Unlock()
	if proc != nil {
		if err := proc.Resize(w, h); err != nil {
			ss.s.c.Logf("sshd: %s: session %s: resize: %v", ss.workspace, ss.ev.ID, err)
		}
	}
	ss.rec.resize(w, h)
}

func (ss *session) openRecording(sp wsexec.Spec) {
	path := filepath.Join(ss.s.c.Recordings, ss.ev.ID+".cast")
	title := ss.conn.User() + "@" + ss.workspace
	rec, err := newRecorder(path, ss.s.c.MaxRecording, sp.Width, sp.Height, ss.pty.Term, title, ss.ev.Start)
	if err != nil {
		ss.s.c.Logf("sshd: %s: session %s: not recorded: %v", ss.workspace, ss.ev.ID, err)
		return
	}
	ss.rec = rec
}

// end closes the recording and reports the session's end.
func (ss *session) end() {
	ev := ss.ev
	ev.Kind = "end"
	ev.Duration = time.Since(ev.Start)
	ev.BytesIn, ev.BytesOut = ss.bytesIn.Load(), ss.bytesOut.Load()
	ev.ExitCode = ss.code
	if ss.rec != nil {
		if err := ss.rec.close(); err != nil {
			ss.s.c.Logf("sshd: %s: session %s: recording: %v", ss.workspace, ss.ev.ID, err)
		}
		ev.Recording = ss.rec.path
	}
	ss.emit(ev)
}

func (ss *session) emit(ev SessionEvent) {
	if ss.s.c.OnSession != nil {
		ss.s.c.OnSession(ev)
	}
}

// chanWriter writes process output to the client, counting and recording it.
type chanWriter struct {
	w   io.Writer
	n   *atomic.Int64
	rec *recorder // nil: not recorded
}

func (c *chanWriter) Write(p []byte) (int, error) {
	c.rec.event("o", p)
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// countingReader reads client input, counting and recording it.
type countingReader struct {
	r   io.Reader
	n   *atomic.Int64
	rec *recorder
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	c.rec.event("i", p[:n])
	return n, err
}

// signals maps SSH signal names (RFC 4254 §6.10) to signals.
var signals = map[string]syscall.Signal{
	"ABRT": syscall.SIGABRT, "ALRM": syscall.SIGALRM, "FPE": syscall.SIGFPE, "HUP": syscall.SIGHUP,
	"ILL": syscall.SIGILL, "INT": syscall.SIGINT, "KILL": syscall.SIGKILL, "PIPE": syscall.SIGPIPE,
	"QUIT": syscall.SIGQUIT, "SEGV": syscall.SIGSEGV, "TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}

// signalName is sig's SSH name; signals without one get "SIG<number>@meshwork.dev".
func signalName(sig syscall.Signal) string {
	for name, s := range signals {
		if s == sig {
			return name
		}
	}
	return fmt.Sprintf("%d@meshwork.dev", int(sig))
}

func clamp16(v uint32) uint16 {
	if v > 0xffff {
		return 0xffff
	}
	return uint16(v)
}

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// splice copies between a and b both ways until both directions end, half-closing as each does.
func splice(a, b io.ReadWriteCloser) {
	var wg sync.WaitGroup
	wg.Add(2)
	one := func(dst, src io.ReadWriteCloser) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go one(a, b)
	go one(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}
