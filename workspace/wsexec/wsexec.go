// Package wsexec is the one contract between what runs processes in a workspace (the
// runtime, workspace/ctrd) and what asks for them (the SSH server, node/sshd): what to run
// (Spec), the process it starts (Process), and how a process a signal ended says so
// (SignalError).
package wsexec

import (
	"io"
	"syscall"
)

// Spec is a process to run inside a running workspace, as `docker exec` would.
//
// The SSH server's Stdin returns io.EOF when the client closes its input or the process has
// exited, so a runtime may copy from it until EOF without outliving the process.
type Spec struct {
	Args          []string  // argv; empty: the user's login shell, "-l"
	Env           []string  // KEY=VALUE added to the workspace's environment (HOME, USER, LOGNAME, SHELL, PATH set by default; TERM=xterm with TTY)
	Root          bool      // run as root; default: the workspace user
	Dir           string    // working directory; default the user's home
	TTY           bool      // a pseudo-terminal: Stdout carries everything, Stderr is unused
	Width, Height uint16    // initial terminal size when TTY
	Stdin         io.Reader // nil: no input (EOF); read until it returns an error, which may be after Wait returned
	Stdout        io.Writer // nil: discarded
	Stderr        io.Writer // nil: discarded
}

// Process is a process started from a Spec. Its methods may be called from any goroutine.
type Process interface {
	// Resize sets the terminal size of a TTY process.
	Resize(width, height uint16) error
	// Signal delivers sig to the process; os.ErrProcessDone once it has exited.
	Signal(sig syscall.Signal) error
	// CloseStdin gives the process EOF (a no-op when Stdin is nil, or with TTY: a terminal has
	// no EOF but ^D). The SSH server calls it after the client's EOF, once the runtime has
	// read io.EOF from Stdin (so all input before it was passed on).
	CloseStdin() error
	// Wait returns after the process exited and everything it wrote was copied to Stdout
	// and Stderr; it does not wait for Stdin to be drained. A process a signal ended returns
	// 128+signal and a *SignalError, so an SSH client learns the signal (exit-signal).
	Wait() (exitCode int, err error)
}

// SignalError is the error Process.Wait returns for a process a signal ended.
type SignalError struct {
	Signal     syscall.Signal
	CoreDumped bool
}

func (e *SignalError) Error() string { return "killed by signal " + e.Signal.String() }
