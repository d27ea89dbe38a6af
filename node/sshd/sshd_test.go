package sshd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

const testWS = "ws1"

var loopback = netip.MustParseAddr("127.0.0.1")

// harness is a Server for workspace testWS on a loopback listener, with a local Executor and a
// mesh in which 127.0.0.1 is alice, who may log in as dev or root.
type harness struct {
	t      *testing.T
	srv    *Server
	addr   string
	exec   *localExec
	hostPK gossh.PublicKey

	mu     sync.Mutex
	events []SessionEvent // guarded by mu
	fails  []AuthFailure  // guarded by mu
}

func newHarness(t *testing.T, edit func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, exec: &localExec{}}
	c := Config{
		HostKeyDir: t.TempDir(),
		WhoIs: func(_ context.Context, remote netip.AddrPort) (Identity, error) {
			if remote.Addr() != loopback {
				return Identity{}, errors.New("not on the mesh")
			}
			return Identity{User: "alice@example.com", Node: "laptop"}, nil
		},
		Allow: func(id Identity, ws, login string) error {
			if id.User == "alice@example.com" && ws == testWS && (login == "dev" || login == "root") {
				return nil
			}
			return fmt.Errorf("%s may not log in to %s as %s", id.User, ws, login)
		},
		Exec:       h.exec,
		Recordings: t.TempDir(),
		OnSession: func(ev SessionEvent) {
			h.mu.Lock()
			h.events = append(h.events, ev)
			h.mu.Unlock()
		},
		OnAuthFailure: func(f AuthFailure) {
			h.mu.Lock()
			h.fails = append(h.fails, f)
			h.mu.Unlock()
		},
		Logf: t.Logf,
	}
	if edit != nil {
		edit(&c)
	}
	srv, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln, testWS) }()
	if h.hostPK, err = srv.HostKey(testWS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-served:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("Serve returned %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after Close")
		}
	})
	return h
}

// dial logs in as login with the x/crypto client, which tries the "none" method.
func (h *harness) dial(login string) (*gossh.Client, error) {
	return gossh.Dial("tcp", h.addr, &gossh.ClientConfig{
		User:            login,
		HostKeyCallback: gossh.FixedHostKey(h.hostPK),
		Timeout:         5 * time.Second,
	})
}

func (h *harness) client(login string) *gossh.Client {
	h.t.Helper()
	c, err := h.dial(login)
	if err != nil {
		h.t.Fatalf("dial as %s: %v", login, err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// session opens a session on a new connection as login.
func (h *harness) session(login string) *gossh.Session {
	h.t.Helper()
	sess, err := h.client(login).NewSession()
	if err != nil {
		h.t.Fatal(err)
	}
	return sess
}

// endEvent waits for the end of session n (counting from 0).
func (h *harness) endEvent(n int) SessionEvent {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		var ends []SessionEvent
		for _, ev := range h.events {
			if ev.Kind == "end" {
				ends = append(ends, ev)
			}
		}
		h.mu.Unlock()
		if len(ends) > n {
			return ends[n]
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("no end event for session %d", n)
	return SessionEvent{}
}

func exitStatus(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *gossh.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("not an exit: %v", err)
	}
	return ee.ExitStatus()
}

// TestQuickExitStillAnswers: a command that exits at once still gets its exec request
// answered and its exit status sent, every time (the channel used to close first now and then,
// and the client's Run failed with EOF).
func TestQuickExitStillAnswers(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("dev")
	for i := range 300 {
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if got := exitStatus(t, sess.Run("exit 3")); got != 3 {
			t.Fatalf("run %d: exit status %d, want 3", i, got)
		}
	}
}

func TestExecKeepsStreamsApartAndReturnsExitCode(t *testing.T) {
	h := newHarness(t, nil)
	sess := h.session("dev")
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	err := sess.Run("echo out; echo err >&2; exit 3")
	if got := exitStatus(t, err); got != 3 {
		t.Errorf("exit status %d, want 3", got)
	}
	if stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Errorf("stdout %q stderr %q, want \"out\\n\" and \"err\\n\"", stdout.String(), stderr.String())
	}
	sp := h.exec.last()
	if sp.Root || sp.TTY || sp.Args[0] != "/bin/sh" || sp.Args[1] != "-c" {
		t.Errorf("spec %+v: want a non-root, non-TTY /bin/sh -c", sp)
	}
	ev := h.endEvent(0)
	if ev.ExitCode != 3 || ev.Command != "echo out; echo err >&2; exit 3" || ev.Login != "dev" ||
		ev.Identity.User != "alice@example.com" || ev.Identity.Addr.Addr() != loopback || ev.BytesOut != 8 || ev.Recording != "" {
		t.Errorf("end event %+v", ev)
	}
}

func TestStdinEOFReachesProcess(t *testing.T) {
	h := newHarness(t, nil)
	sess := h.session("dev")
	sess.Stdin = strings.NewReader("typed input")
	out, err := sess.Output("cat; echo; echo done")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "typed input\ndone\n" {
		t.Errorf("output %q", out)
	}
	if ev := h.endEvent(0); ev.BytesIn != int64(len("typed input")) {
		t.Errorf("BytesIn %d, want %d", ev.BytesIn, len("typed input"))
	}
}

func TestEnvAndRootLogin(t *testing.T) {
	h := newHarness(t, nil)
	sess, err := h.client("root").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Setenv("LC_MESH", "yes"); err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output(`echo "$LC_MESH $SSH_CONNECTION"`)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "yes 127.0.0.1 ") {
		t.Errorf("output %q: want the env request and SSH_CONNECTION", out)
	}
	if !h.exec.last().Root {
		t.Errorf("login root ran without Root")
	}
}

func TestRefusedIdentity(t *testing.T) {
	h := newHarness(t, nil)
	_, err := h.dial("mallory")
	if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("dial as a login Allow refuses: %v, want an auth failure", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.fails) != 1 || h.fails[0].Login != "mallory" || !strings.Contains(h.fails[0].Reason, "may not log in") {
		t.Errorf("auth failures %+v: want one for mallory with Allow's reason", h.fails)
	}
}

func TestKilledProcessReportsSignal(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("dev")
	t.Run("by itself", func(t *testing.T) {
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		err = sess.Run("kill -9 $$")
		var ee *gossh.ExitError
		if !errors.As(err, &ee) || ee.ExitStatus() != 137 || ee.Signal() != "KILL" {
			t.Errorf("got %v, want exit status 137 and signal KILL", err)
		}
	})
	t.Run("by the client", func(t *testing.T) {
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		stdout, _ := sess.StdoutPipe()
		if err := sess.Start("echo ready; exec sleep 30"); err != nil {
			t.Fatal(err)
		}
		line := make([]byte, 6)
		if _, err := io.ReadFull(stdout, line); err != nil {
			t.Fatal(err)
		}
		if err := sess.Signal(gossh.SIGTERM); err != nil {
			t.Fatal(err)
		}
		err = sess.Wait()
		var ee *gossh.ExitError
		if !errors.As(err, &ee) || ee.ExitStatus() != 143 || ee.Signal() != "TERM" {
			t.Errorf("got %v, want exit status 143 and signal TERM", err)
		}
	})
}

func TestPTYSessionIsRecorded(t *testing.T) {
	h := newHarness(t, nil)
	sess := h.session("dev")
	if err := sess.RequestPty("xterm-256color", 40, 100, gossh.TerminalModes{gossh.ECHO: 1}); err != nil {
		t.Fatal(err)
	}
	stdin, _ := sess.StdinPipe()
	out := &syncBuffer{}
	sess.Stdout = out
	if err := sess.Start(`echo "TERM=$TERM"; read a; echo "got $a"; read b; stty size`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "TERM=xterm-256color")
	io.WriteString(stdin, "hello\r")
	waitFor(t, out, "got hello")
	if err := sess.WindowChange(50, 120); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "x\r")
	waitFor(t, out, "50 120") // the resize reached the terminal
	if err := sess.Wait(); err != nil {
		t.Fatal(err)
	}
	ev := h.endEvent(0)
	if !ev.PTY || ev.Recording == "" {
		t.Fatalf("end event %+v: want a recorded PTY session", ev)
	}
	c := readCast(t, ev.Recording)
	want := castHeader{Version: 2, Width: 100, Height: 40, Env: map[string]string{"TERM": "xterm-256color"}, Title: "dev@ws1"}
	c.header.Timestamp = 0
	if fmt.Sprint(c.header) != fmt.Sprint(want) {
		t.Errorf("header %+v, want %+v", c.header, want)
	}
	for kind, want := range map[string]string{"i": "hello\r", "o": "got hello", "r": "120x50"} {
		if !strings.Contains(c.stream(kind), want) {
			t.Errorf("%q events %q: missing %q", kind, c.stream(kind), want)
		}
	}
	if !strings.Contains(c.stream("o"), "hello") { // echoed by the terminal
		t.Errorf("output does not hold what was typed")
	}
}

func TestLocalForwardGoesThroughDial(t *testing.T) {
	echo := echoServer(t)
	var dialed []string
	h := newHarness(t, func(c *Config) {
		c.Dial = func(ctx context.Context, ws, network, addr string) (net.Conn, error) {
			dialed = append(dialed, ws+" "+network+" "+addr)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	})
	conn, err := h.client("dev").Dial("tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip(t, conn)
	if len(dialed) != 1 || dialed[0] != testWS+" tcp "+echo {
		t.Errorf("Dial calls %q", dialed)
	}
}

func TestForwardingRefusedWithoutHooks(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("dev")
	if conn, err := c.Dial("tcp", echoServer(t)); err == nil {
		conn.Close()
		t.Errorf("-L worked without Config.Dial")
	}
	if ln, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
		t.Errorf("-R worked without Config.ListenIn")
	}
}

func TestRemoteForwardGoesThroughListenIn(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.ListenIn = func(ctx context.Context, ws, network, addr string) (net.Listener, error) {
			if ws != testWS {
				return nil, fmt.Errorf("wrong workspace %q", ws)
			}
			return net.Listen(network, addr)
		}
	})
	c := h.client("dev")
	ln, err := c.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // the client's side: echo what comes through the forward
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		io.Copy(conn, conn)
	}()
	conn, err := net.Dial("tcp", ln.Addr().String()) // a process inside the workspace
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip(t, conn)
}

func TestShieldBlocksAndUnblocks(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	note := func(s string) {
		mu.Lock()
		calls = append(calls, s)
		mu.Unlock()
	}
	h := newHarness(t, func(c *Config) {
		c.Shield = ShieldConfig{
			MaxFailures: 3, Window: time.Minute, BlockFor: 700 * time.Millisecond,
			Block:   func(a netip.Addr, d time.Duration) error { note("block " + a.String()); return nil },
			Unblock: func(a netip.Addr) error { note("unblock " + a.String()); return nil },
		}
	})
	for range 3 {
		if _, err := h.dial("mallory"); err == nil {
			t.Fatal("mallory got in")
		}
	}
	blocked := h.srv.Blocked()
	if len(blocked) != 1 || blocked[0].Addr != loopback || blocked[0].Failures != 3 {
		t.Fatalf("Blocked() = %+v, want 127.0.0.1 after 3 failures", blocked)
	}
	if c, err := h.dial("dev"); err == nil {
		c.Close()
		t.Fatal("a blocked address logged in")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(h.srv.Blocked()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	h.client("dev") // the block has ended
	mu.Lock()
	if got := strings.Join(calls, ", "); got != "block 127.0.0.1, unblock 127.0.0.1" {
		t.Errorf("shield hooks: %s", got)
	}
	mu.Unlock()

	for range 3 {
		h.dial("mallory")
	}
	if err := h.srv.Unblock(loopback); err != nil {
		t.Fatal(err)
	}
	h.client("dev")
	if err := h.srv.Unblock(loopback); err == nil {
		t.Errorf("Unblock of an address not blocked succeeded")
	}
}

func TestHostKeyIsStableAcrossServers(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{HostKeyDir: dir, WhoIs: newHarness(t, nil).srv.c.WhoIs, Allow: func(Identity, string, string) error { return nil }, Exec: &localExec{}}
	key := func() gossh.PublicKey {
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		k, err := s.HostKey("api")
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	a, b := key(), key()
	if !bytes.Equal(a.Marshal(), b.Marshal()) || a.Type() != gossh.KeyAlgoED25519 {
		t.Errorf("host keys %s and %s: want the same ed25519 key", gossh.FingerprintSHA256(a), gossh.FingerprintSHA256(b))
	}
	s, _ := New(cfg)
	defer s.Close()
	if other, _ := s.HostKey("web"); bytes.Equal(other.Marshal(), a.Marshal()) {
		t.Errorf("two workspaces share a host key")
	}
	for _, bad := range []string{"", "../x", "a/b", ".hidden"} {
		if _, err := s.HostKey(bad); err == nil {
			t.Errorf("HostKey(%q) succeeded", bad)
		}
	}
}

func TestCloseEndsRunningSessions(t *testing.T) {
	h := newHarness(t, nil)
	sess := h.session("dev")
	stdout, _ := sess.StdoutPipe()
	if err := sess.Start("echo ready; exec sleep 60"); err != nil {
		t.Fatal(err)
	}
	io.ReadFull(stdout, make([]byte, 6))
	start := time.Now()
	if err := h.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Close took %v", d)
	}
	if ev := h.endEvent(0); ev.ExitCode != 128+1 { // SIGHUP
		t.Errorf("end event %+v: want the process hung up", ev)
	}
	if _, err := h.dial("dev"); err == nil {
		t.Errorf("dial after Close succeeded")
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, b *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q: no %q", b.String(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping through the tunnel"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("ping through the tunnel"))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != "ping through the tunnel" {
		t.Errorf("echo %q", got)
	}
}
