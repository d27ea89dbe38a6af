package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// A Proc is a process running inside a lab host. Its output goes to the test log, one line at
// a time, prefixed with the host and program name. The lab stops it on cleanup.
type Proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and its output is drained
	err  error         // exit error; valid after done
}

// Command returns an exec.Cmd that runs name with args inside the host (through
// `ip netns exec`, which also applies /etc/netns/NS/resolv.conf when it exists).
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// spawner is one OS thread, locked and never ended, that forks every long-running lab
// process. The kernel's parent-death signal follows the thread that forked a child, not the
// process, and Go ends a thread whose goroutine exits locked to it — as code that switches
// network namespaces does — so a child forked from an ordinary thread could be killed at
// any moment by unrelated code in the test.
var spawner = sync.OnceValue(func() chan<- func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread()
		for f := range ch {
			f()
		}
	}()
	return ch
})

// startOnSpawner starts cmd from the spawner thread, killed with SIGKILL if the test dies.
func startOnSpawner(cmd *exec.Cmd) error {
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	errc := make(chan error, 1)
	spawner() <- func() { errc <- cmd.Start() }
	return <-errc
}

// Run runs a command inside the host and returns its combined output.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s on %s: %w: %s", name, h.name, err, out)
	}
	return string(out), nil
}

// Start starts a long-running command inside the host. Env entries are added to the
// process's environment.
func (h *Host) Start(env []string, name string, args ...string) *Proc {
	h.lab.t.Helper()
	return h.start(h.Command(context.Background(), name, args...), name, env)
}

// StartShared is Start with only the network namespace the host's: the process keeps the
// machine's mount namespace (`ip netns exec` makes one of its own), so the network
// namespaces it mounts are seen by daemons outside the lab, such as containerd and runc —
// as a workmachine's agent needs. /etc/netns/NS/resolv.conf does not apply.
func (h *Host) StartShared(env []string, name string, args ...string) *Proc {
	h.lab.t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + h.ns, "--", name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return h.start(cmd, name, env)
}

func (h *Host) start(cmd *exec.Cmd, name string, env []string) *Proc {
	h.lab.t.Helper()
	cmd.Env = append(cmd.Environ(), env...)
	p := &Proc{name: h.name + "/" + filepath.Base(name), cmd: cmd, done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		h.lab.t.Fatalf("lab: start %s: %v", p.name, err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		h.lab.t.Fatalf("lab: start %s: %v", p.name, err)
	}
	if err := startOnSpawner(cmd); err != nil {
		h.lab.t.Fatalf("lab: start %s: %v", p.name, err)
	}
	h.lab.mu.Lock()
	h.lab.procs = append(h.lab.procs, p)
	h.lab.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go p.copyLines(&wg, stdout, h.lab.t.Logf)
	go p.copyLines(&wg, stderr, h.lab.t.Logf)
	go func() {
		wg.Wait()
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *Proc) copyLines(wg *sync.WaitGroup, r io.Reader, logf func(string, ...any)) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		logf("%s: %s", p.name, sc.Text())
	}
	io.Copy(io.Discard, r) // a line too long for the scanner must not block the process
}

// Pid is the process ID (of the program itself: `ip netns exec` execs it).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit error.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// Kill sends SIGKILL to the process group and waits for it to exit, as `kill -9` would.
func (p *Proc) Kill() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Stop asks the process group to terminate (SIGTERM), and kills it after 5 seconds.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.Kill()
	}
}
