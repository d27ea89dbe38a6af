package ctl

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// Main runs meshctl as a program: the process's arguments and streams, Ctrl-C and SIGTERM
// ending the context, the exit code from ExitCode.
func Main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(ExitCode(err, os.Stderr))
}
