package ctrd

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"meshwork.dev/workspace/wsexec"
)

const (
	execCallTimeout = 10 * time.Second // for each containerd call a wsexec.Process method makes
	outputQuiet     = 2 * time.Second  // after exit, output silent this long is done (a background child may hold it open)
	defaultPath     = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Exec starts s in workspace name's running task: it shares the container's namespaces,
// cgroup, rootfs and mounts, and runs as the workspace user unless s.Root. ctx bounds the start
// only; the process runs until it exits or is signalled. An unknown workspace is an error
// wrapping ErrNotFound, one that is not running wraps ErrNotRunning.
func (r *Runtime) Exec(ctx context.Context, name string, s wsexec.Spec) (wsexec.Process, error) {
	p, err := r.exec(ctx, name, s)
	if err != nil {
		return nil, fmt.Errorf("ws exec %s: %w", name, err)
	}
	return p, nil
}

// PID returns the pid (in this machine's pid namespace) of workspace name's init, for entering
// its namespaces. Errors are as Exec's.
func (r *Runtime) PID(ctx context.Context, name string) (int, error) {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return 0, err
	}
	_, task, err := r.runningTask(ctx, c, name)
	if err != nil {
		return 0, fmt.Errorf("ws pid %s: %w", name, err)
	}
	return int(task.Pid()), nil
}

func (r *Runtime) exec(ctx context.Context, name string, s wsexec.Spec) (*process, error) {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return nil, err
	}
	ctr, task, err := r.runningTask(ctx, c, name)
	if err != nil {
		return nil, err
	}
	sp, err := ctr.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("container spec: %w", err)
	}
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return nil, fmt.Errorf("container labels: %w", err)
	}
	a := execAccount(int(task.Pid()), labels[LabelUser], s.Root)
	return r.startExec(ctx, task, processSpec(sp.Process, a, s), s)
}

// runningTask returns workspace name's container and its running task.
func (r *Runtime) runningTask(ctx context.Context, c *containerd.Client, name string) (containerd.Container, containerd.Task, error) {
	ctr, err := r.find(ctx, c, name)
	if err != nil {
		return nil, nil, err
	}
	task, err := ctr.Task(ctx, nil)
	if err == nil {
		if ts, err := task.Status(ctx); err == nil && ts.Status == containerd.Running {
			return ctr, task, nil
		}
	} else if !errdefs.IsNotFound(err) {
		return nil, nil, fmt.Errorf("load task: %w", err)
	}
	st, err := r.status(ctx, ctr)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrNotRunning, err)
	}
	state := string(st.State)
	if st.Reason != "" {
		state += " (" + st.Reason + ")"
	}
	return nil, nil, fmt.Errorf("%w: it is %s; start it first", ErrNotRunning, state)
}

// execAccount is who an exec runs as: the workspace user, or root. The login shell (and root's
// home) come from the container's /etc/passwd; the user's ids and home are always ours.
func execAccount(pid int, user string, root bool) account {
	if root {
		a, ok := containerAccount(pid, "root")
		if !ok {
			a = account{Name: "root", Home: "/root", Shell: "/bin/sh"}
		}
		a.UID, a.GID = 0, 0
		return a
	}
	u := userAccount(user, "/bin/sh")
	if a, ok := containerAccount(pid, user); ok {
		u.Shell = a.Shell
	}
	return u
}

// processSpec derives an exec's process from the container's: same rlimits, security
// labels and capability bounds; our user, args, env and dir. The user has no capabilities.
func processSpec(base *specs.Process, a account, s wsexec.Spec) *specs.Process {
	p := *base
	p.Terminal, p.ConsoleSize = s.TTY, nil
	if s.TTY && s.Width > 0 && s.Height > 0 {
		p.ConsoleSize = &specs.Box{Width: uint(s.Width), Height: uint(s.Height)}
	}
	p.Args = slices.Clone(s.Args)
	if len(p.Args) == 0 {
		p.Args = []string{a.Shell, "-l"}
	}
	p.Cwd = cmpOr(s.Dir, a.Home)
	p.Env = execEnv(base.Env, a, s)
	p.User = specs.User{UID: a.UID, GID: a.GID}
	if a.UID == 0 && base.User.UID == 0 {
		p.User.AdditionalGids = base.User.AdditionalGids
	}
	if a.UID != 0 && base.Capabilities != nil {
		p.Capabilities = &specs.LinuxCapabilities{Bounding: base.Capabilities.Bounding}
	}
	return &p
}

// execEnv is the container's environment with a's variables set, then s.Env on top.
func execEnv(base []string, a account, s wsexec.Spec) []string {
	set := []string{"HOME=" + a.Home, "USER=" + a.Name, "LOGNAME=" + a.Name, "SHELL=" + a.Shell}
	if !hasEnv(base, "PATH") {
		set = append(set, defaultPath)
	}
	if s.TTY && !hasEnv(base, "TERM") {
		set = append(set, "TERM=xterm")
	}
	return mergeEnv(mergeEnv(slices.Clone(base), set), s.Env)
}

func envKey(kv string) string {
	k, _, _ := strings.Cut(kv, "=")
	return k
}

func hasEnv(env []string, key string) bool {
	return slices.ContainsFunc(env, func(kv string) bool { return envKey(kv) == key })
}

// mergeEnv sets each of add in env, replacing a variable of the same name in place.
func mergeEnv(env, add []string) []string {
	for _, kv := range add {
		i := slices.IndexFunc(env, func(e string) bool { return envKey(e) == envKey(kv) })
		if i >= 0 {
			env[i] = kv
		} else {
			env = append(env, kv)
		}
	}
	return env
}

// startExec creates and starts the exec process ps in task, its IO wired to s's streams.
func (r *Runtime) startExec(ctx context.Context, task containerd.Task, ps *specs.Process, s wsexec.Spec) (*process, error) {
	p := &process{
		ctx:   context.WithoutCancel(ctx),
		logf:  r.logf,
		tty:   s.TTY,
		input: s.Stdin != nil,
		done:  make(chan struct{}),
	}
	stdin, stdinEOF := s.Stdin, (chan struct{})(nil)
	if stdin != nil && !s.TTY {
		stdin, stdinEOF = p.pipeStdin(s.Stdin)
	}
	opts := []cio.Opt{cio.WithStreams(stdin, p.out.writer(s.Stdout), p.out.writer(s.Stderr))}
	if s.TTY {
		opts = append(opts, cio.WithTerminal)
	}
	id := "exec-" + strings.ToLower(rand.Text())
	proc, err := task.Exec(ctx, id, ps, cio.NewCreator(opts...))
	if err != nil {
		p.endStdin()
		return nil, fmt.Errorf("exec %q: %w", ps.Args[0], err)
	}
	p.proc = proc
	exited, err := proc.Wait(p.ctx)
	if err == nil {
		err = proc.Start(ctx)
	}
	if err != nil {
		p.delete()
		p.endStdin()
		return nil, fmt.Errorf("exec %q: %w", ps.Args[0], err)
	}
	go p.watch(exited, stdinEOF)
	return p, nil
}

// pipeStdin returns the reader for the process's stdin, r copied through a pipe, and a
// channel closed at its end. The shim holds the stdin fifo open too, so EOF needs CloseIO
// after our end closed; the pipe is our end, which CloseStdin can close while r's Read blocks.
func (p *process) pipeStdin(r io.Reader) (io.Reader, chan struct{}) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(copyErr(io.Copy(pw, r))) }()
	p.stdin, p.stdinR = pw, pr
	eof := make(chan struct{})
	return &eofReader{r: pr, eof: eof}, eof
}

// endStdin ends the copy from Stdin at its next Read.
func (p *process) endStdin() {
	if p.stdinR != nil {
		p.stdinR.Close()
	}
}

// process is a wsexec.Process on containerd.
type process struct {
	ctx    context.Context // never cancelled: calls on the process are bounded by execCallTimeout
	logf   func(format string, args ...any)
	proc   containerd.Process
	tty    bool
	input  bool           // Stdin was given
	stdin  *io.PipeWriter // without TTY: Stdin is copied here; the read end goes to the process
	stdinR *io.PipeReader
	out    meter

	stdinOnce sync.Once
	stdinErr  error // set in stdinOnce

	done chan struct{} // closed by watch when the process is gone; then code and err are set
	code int
	err  error
}

// watch, the goroutine Wait waits for, closes stdin on its EOF, then on the process's exit
// waits for its output and deletes it.
func (p *process) watch(exited <-chan containerd.ExitStatus, stdinEOF <-chan struct{}) {
	defer close(p.done)
	var st containerd.ExitStatus
	for waiting := true; waiting; {
		select {
		case <-stdinEOF:
			stdinEOF = nil
			if err := p.closeStdin(); err != nil {
				p.logf("ctrd: %v", err)
			}
		case st = <-exited:
			waiting = false
		}
	}
	ioDone := make(chan struct{})
	go func() {
		defer close(ioDone)
		p.proc.IO().Wait()
	}()
	p.drain(ioDone)
	p.delete() // closes the IO when the drain gave up
	<-ioDone
	p.endStdin()
	code, _, err := st.Result()
	p.code, p.err = int(code), exitError(code)
	if err != nil {
		p.code, p.err = -1, fmt.Errorf("ws exec: wait: %w", err)
	}
}

// exitError is the error for a process's exit code: a *wsexec.SignalError when a signal that
// ends a process ended it. containerd reports that as 128+signal, as a shell does, so a
// process that exits with such a code itself is taken as signalled too.
func exitError(code uint32) error {
	sig := syscall.Signal(code - 128)
	if code <= 128 || !terminating[sig] {
		return nil
	}
	return &wsexec.SignalError{Signal: sig}
}

// terminating are the signals whose default action ends a process.
var terminating = map[syscall.Signal]bool{
	syscall.SIGHUP: true, syscall.SIGINT: true, syscall.SIGQUIT: true, syscall.SIGILL: true,
	syscall.SIGTRAP: true, syscall.SIGABRT: true, syscall.SIGBUS: true, syscall.SIGFPE: true,
	syscall.SIGKILL: true, syscall.SIGUSR1: true, syscall.SIGSEGV: true, syscall.SIGUSR2: true,
	syscall.SIGPIPE: true, syscall.SIGALRM: true, syscall.SIGTERM: true, syscall.SIGSTKFLT: true,
	syscall.SIGXCPU: true, syscall.SIGXFSZ: true, syscall.SIGVTALRM: true, syscall.SIGPROF: true,
	syscall.SIGIO: true, syscall.SIGPWR: true, syscall.SIGSYS: true,
}

// drain returns when the output is copied out, or has been silent for outputQuiet with no
// write in progress: a background child of the process may hold it open for ever.
func (p *process) drain(ioDone <-chan struct{}) {
	tick := time.NewTicker(outputQuiet)
	defer tick.Stop()
	last, _ := p.out.progress()
	for {
		select {
		case <-ioDone:
			return
		case <-tick.C:
		}
		n, idle := p.out.progress()
		if n == last && idle {
			return
		}
		last = n
	}
}

func (p *process) delete() {
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if _, err := p.proc.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		p.logf("ctrd: delete exec %s: %v", p.proc.ID(), err)
	}
}

func (p *process) Wait() (int, error) {
	<-p.done
	return p.code, p.err
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// call runs f with a bounded context, mapping a process that is gone to os.ErrProcessDone.
func (p *process) call(what string, f func(context.Context) error) error {
	if p.exited() {
		return os.ErrProcessDone
	}
	ctx, cancel := context.WithTimeout(p.ctx, execCallTimeout)
	defer cancel()
	if err := f(ctx); errdefs.IsNotFound(err) {
		return os.ErrProcessDone
	} else if err != nil {
		return fmt.Errorf("ws exec: %s: %w", what, err)
	}
	return nil
}

func (p *process) Signal(sig syscall.Signal) error {
	return p.call("signal "+sig.String(), func(ctx context.Context) error { return p.proc.Kill(ctx, sig) })
}

func (p *process) Resize(width, height uint16) error {
	if !p.tty {
		return errors.New("ws exec: resize: the process has no terminal")
	}
	return p.call("resize", func(ctx context.Context) error {
		return p.proc.Resize(ctx, uint32(width), uint32(height))
	})
}

func (p *process) CloseStdin() error {
	if !p.input || p.tty {
		return nil
	}
	p.stdin.Close()
	return p.closeStdin()
}

// copyErr is the error to end the stdin pipe with: EOF for a reader that ended well.
func copyErr(_ int64, err error) error { return err }

func (p *process) closeStdin() error {
	p.stdinOnce.Do(func() {
		err := p.call("close stdin", func(ctx context.Context) error {
			return p.proc.CloseIO(ctx, containerd.WithStdinCloser)
		})
		if !errors.Is(err, os.ErrProcessDone) {
			p.stdinErr = err
		}
	})
	return p.stdinErr
}

// eofReader closes eof when its reader returns an error (io.EOF included).
type eofReader struct {
	r    io.Reader
	once sync.Once
	eof  chan struct{}
}

func (e *eofReader) Read(b []byte) (int, error) {
	n, err := e.r.Read(b)
	if err != nil {
		e.once.Do(func() { close(e.eof) })
	}
	return n, err
}

// meter counts writes to an exec's output, started and finished.
type meter struct{ started, finished atomic.Int64 }

// progress returns a number that grows with every write, and whether none is in progress.
func (m *meter) progress() (n int64, idle bool) {
	f := m.finished.Load()
	s := m.started.Load()
	return s + f, s == f
}

// writer returns w (io.Discard if nil) counting its writes in m.
func (m *meter) writer(w io.Writer) io.Writer {
	if w == nil {
		w = io.Discard
	}
	return meteredWriter{w, m}
}

type meteredWriter struct {
	w io.Writer
	m *meter
}

func (mw meteredWriter) Write(b []byte) (int, error) {
	mw.m.started.Add(1)
	defer mw.m.finished.Add(1)
	return mw.w.Write(b)
}
