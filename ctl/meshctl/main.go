// Command meshctl is Meshwork's one binary; see meshwork.dev/ctl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"meshwork.dev/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := ctl.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(ctl.ExitCode(err, os.Stderr))
}
