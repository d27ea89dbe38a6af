// Package reaper is a tiny init for containers (compose's init: true): run as pid 1, it starts
// a command, forwards the signals it gets to it, reaps every orphan that ends up its child,
// and exits as the command did.
package reaper

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// Main runs args as a child until it exits, and returns its exit code (128+N for a child
// ended by signal N, as a shell reports it). Orphans reparented to this process are reaped
// as they end; with no args it returns 2.
func Main(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "reaper: no command given: meshctl _init -- COMMAND [ARGS...]")
		return 2
	}
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs) // every signal: forwarded to the child, SIGCHLD reaps
	defer signal.Stop(sigs)
	child, err := start(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "reaper: %v\n", err)
		return 127
	}
	for {
		if code, done := reap(child); done {
			return code
		}
		sig := (<-sigs).(syscall.Signal)
		if forward(sig) {
			unix.Kill(child, sig) // the child may be gone: the next reap finds out
		}
	}
}

// start starts args with this process's streams and environment, and returns its pid.
func start(args []string) (int, error) {
	path, err := exec.LookPath(args[0])
	if err != nil {
		return 0, err
	}
	p, err := os.StartProcess(path, args, &os.ProcAttr{Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}})
	if err != nil {
		return 0, err
	}
	pid := p.Pid
	p.Release() // reaped by reap, with every other child
	return pid, nil
}

// reap collects every child that has ended; done reports whether child was among them, with
// its exit code.
func reap(child int) (code int, done bool) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return code, done
		}
		if pid == child {
			code, done = exitCode(ws), true
		}
	}
}

func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// forward reports whether sig goes on to the child: not SIGCHLD (ours), nor SIGURG (the Go
// runtime's own preemption signal).
func forward(sig syscall.Signal) bool {
	return sig != unix.SIGCHLD && sig != unix.SIGURG
}
