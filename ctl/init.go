package ctl

import (
	"context"

	"meshwork.dev/workspace/reaper"
)

// initCmd is pid 1 of an environment service with compose's init: true (the workmachine runs
// it from the tools mount): it runs the service's command, forwards signals and reaps orphans.
// Hidden from --help: nobody types it.
var initCmd = &command{
	name:    "_init",
	summary: "Run a command as a container's init (internal)",
	usage:   "-- COMMAND [ARGS...]",
	hidden:  true,
	run:     runInit,
}

func runInit(_ context.Context, _ *env, args []string) error {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if code := reaper.Main(args); code != 0 {
		return &exitError{code: code}
	}
	return nil
}
