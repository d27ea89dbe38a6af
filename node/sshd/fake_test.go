package sshd

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	"meshwork.dev/workspace/wsexec"
)

// localExec is an Executor that runs real local processes, with a real pty for TTY sessions, and
// runs the sftp subsystem's server (SFTPServer) in-process through ServeSFTP.
type localExec struct {
	mu    sync.Mutex
	specs []wsexec.Spec // every spec asked for; guarded by mu
}

var _ Executor = (*localExec)(nil)

func (e *localExec) Exec(ctx context.Context, workspace string, sp wsexec.Spec) (wsexec.Process, error) {
	e.mu.Lock()
	e.specs = append(e.specs, sp)
	e.mu.Unlock()
	if sp.Args[0] == SFTPServer[0] {
		return startSFTP(sp), nil
	}
	cmd := exec.Command(sp.Args[0], sp.Args[1:]...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + os.TempDir()}, sp.Env...)
	cmd.Dir = sp.Dir
	if sp.TTY {
		return startTTY(cmd, sp)
	}
	return startPiped(cmd, sp)
}

func (e *localExec) last() wsexec.Spec {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.specs[len(e.specs)-1]
}

// localProc is a local process.
type localProc struct {
	cmd     *exec.Cmd
	ptmx    *os.File       // TTY only
	stdin   io.WriteCloser // piped only
	outDone chan struct{}  // TTY only: the pty's output is copied
}

func startPiped(cmd *exec.Cmd, sp wsexec.Spec) (*localProc, error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = sp.Stdout, sp.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go io.Copy(stdin, sp.Stdin) // like containerd: EOF alone does not close the process's stdin
	return &localProc{cmd: cmd, stdin: stdin}, nil
}

func startTTY(cmd *exec.Cmd, sp wsexec.Spec) (*localProc, error) {
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: sp.Width, Rows: sp.Height})
	if err != nil {
		return nil, err
	}
	p := &localProc{cmd: cmd, ptmx: ptmx, outDone: make(chan struct{})}
	go io.Copy(ptmx, sp.Stdin)
	go func() {
		defer close(p.outDone)
		io.Copy(sp.Stdout, ptmx) // ends with EIO once the process and its children are gone
	}()
	return p, nil
}

func (p *localProc) Resize(w, h uint16) error {
	if p.ptmx == nil {
		return errors.New("no tty")
	}
	return pty.Setsize(p.ptmx, &pty.Winsize{Cols: w, Rows: h})
}

func (p *localProc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

func (p *localProc) CloseStdin() error {
	if p.stdin != nil {
		return p.stdin.Close()
	}
	return nil
}

func (p *localProc) Wait() (int, error) {
	err := p.cmd.Wait()
	if p.ptmx != nil {
		select {
		case <-p.outDone:
		case <-time.After(5 * time.Second):
		}
		p.ptmx.Close()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), &wsexec.SignalError{Signal: ws.Signal(), CoreDumped: ws.CoreDump()}
		}
		return ee.ExitCode(), nil
	}
	return 0, err
}

// sftpProc is ServeSFTP running in-process on the session's pipes, as `meshctl sftp-server`
// would inside a workspace.
type sftpProc struct {
	done chan struct{}
	err  error
}

type pipeRW struct {
	io.Reader
	io.Writer
}

func (pipeRW) Close() error { return nil }

func startSFTP(sp wsexec.Spec) *sftpProc {
	p := &sftpProc{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.err = ServeSFTP(pipeRW{sp.Stdin, sp.Stdout})
	}()
	return p
}

func (p *sftpProc) Resize(uint16, uint16) error { return errors.New("no tty") }
func (p *sftpProc) Signal(syscall.Signal) error { return nil }
func (p *sftpProc) CloseStdin() error           { return nil }
func (p *sftpProc) Wait() (int, error) {
	<-p.done
	if p.err != nil {
		return 1, p.err
	}
	return 0, nil
}
