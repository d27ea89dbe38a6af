package ctl

import "context"

var helpCmd = &command{
	name:     "help",
	summary:  "Show help for meshctl or one command",
	usage:    "[COMMAND]",
	examples: []string{"meshctl help", "meshctl help version"},
	run:      runHelp,
}

func runHelp(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.parse(fs, args); err != nil {
		return err
	}
	switch fs.NArg() {
	case 0:
		return printHelp(e.stdout)
	case 1:
		c := lookup(fs.Arg(0))
		if c == nil {
			return usageErrorf("help: unknown command %q; run 'meshctl --help' for the list", fs.Arg(0))
		}
		c.flags(e).Usage()
		return nil
	default:
		return usageErrorf("help: takes at most one command name")
	}
}
