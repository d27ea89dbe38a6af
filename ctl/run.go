// Package ctl is meshctl: the one binary holding every Meshwork role (coord, node, daemon) and
// every user command. main is a thin shell around Run.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// A command is one meshctl subcommand. Each lives in its own file and is listed in commands.
type command struct {
	name     string
	summary  string   // one line for `meshctl --help`
	usage    string   // synopsis after "meshctl NAME"
	about    string   // what to know before using it, shown by --help under the synopsis
	examples []string // shown at the end of `meshctl NAME --help`
	hidden   bool     // left out of `meshctl --help`
	run      func(ctx context.Context, e *env, args []string) error
}

// commands is every subcommand, in the order `meshctl --help` lists them. It is filled in init
// because help refers back to it.
var commands []*command

func init() {
	commands = []*command{upCmd, downCmd, statusCmd, pingCmd, ncCmd, daemonCmd, coordCmd, nodeCmd, wsCmd, envCmd, interceptCmd, exitCmd, sshCmd, sshConfigCmd, sftpServerCmd, userCmd, apikeyCmd, authkeyCmd, policyCmd, auditCmd, clusterCmd, backupCmd, versionCmd, helpCmd, initCmd}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// env is what a command runs with: its streams, the global flags and the command itself.
type env struct {
	cmd    *command
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	global globalFlags
}

// globalFlags are accepted before the subcommand and by every subcommand.
type globalFlags struct {
	coord string // --coord, MESHCTL_COORD
	token string // --token, MESHCTL_TOKEN
	json  bool   // --json
}

// register adds the global flags to fs, keeping values already set (from the environment or
// from flags before the subcommand) as defaults.
func (g *globalFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.coord, "coord", g.coord, "coord `URL` (env MESHCTL_COORD)")
	fs.StringVar(&g.token, "token", g.token, "API `key` (env MESHCTL_TOKEN)")
	fs.BoolVar(&g.json, "json", g.json, "print JSON instead of text")
}

// UsageError is a mistake in how meshctl was called; the process exits 2.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &UsageError{fmt.Sprintf(format, args...)}
}

// ExitCode reports err on stderr the way meshctl does and returns the process exit code:
// 0 for nil, 2 for usage errors, 1 otherwise.
func ExitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var child *exitError
	if errors.As(err, &child) {
		return child.code // the child (ssh) has said why
	}
	fmt.Fprintf(stderr, "meshctl: %v\n", err)
	var ue *UsageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// Run runs meshctl with args (without the program name).
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	e.global.coord = os.Getenv("MESHCTL_COORD")
	e.global.token = os.Getenv("MESHCTL_TOKEN")
	fs := flag.NewFlagSet("meshctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.global.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return printHelp(stdout)
		}
		return usageErrorf("%v; run 'meshctl --help'", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		printHelp(stderr)
		return usageErrorf("no command given; run 'meshctl --help'")
	}
	c := lookup(rest[0])
	if c == nil {
		return usageErrorf("unknown command %q; run 'meshctl --help' for the list", rest[0])
	}
	e.cmd = c
	if err := c.run(ctx, e, rest[1:]); !errors.Is(err, errHelpShown) {
		return err
	}
	return nil
}

// flags makes the flag set for e's command, with the global flags and a --help that teaches.
func (e *env) flags() *flag.FlagSet {
	return e.cmd.flags(e)
}

func (c *command) flags(e *env) *flag.FlagSet {
	fs := flag.NewFlagSet("meshctl "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.global.register(fs)
	fs.Usage = func() {
		w := e.stdout
		fmt.Fprintf(w, "%s\n\nUsage:\n  meshctl %s %s\n", c.summary, c.name, c.usage)
		if c.about != "" {
			fmt.Fprintf(w, "\n%s\n", c.about)
		}
		printFlags(w, fs)
		fmt.Fprintf(w, "\nGlobal flags: --coord URL, --token KEY, --json (see 'meshctl --help').\n")
		if len(c.examples) > 0 {
			fmt.Fprintf(w, "\nExamples:\n")
			for _, ex := range c.examples {
				fmt.Fprintf(w, "  %s\n", ex)
			}
		}
	}
	return fs
}

// printFlags lists fs's own flags, leaving out the global ones.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		if isGlobalFlag(f.Name) {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  --%s %s\n      %s", f.Name, name, usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(&b, " (default %s)", f.DefValue)
		}
		b.WriteString("\n")
	})
	if b.Len() > 0 {
		fmt.Fprintf(w, "\nFlags:\n%s", b.String())
	}
}

func isGlobalFlag(name string) bool {
	return name == "coord" || name == "token" || name == "json"
}

// parse parses args into fs; after --help (which prints the command's help) it returns
// errHelpShown.
func (e *env) parse(fs *flag.FlagSet, args []string) error {
	c := e.cmd
	err := parseInterleaved(fs, args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp): // the flag package has printed fs.Usage
		return errHelpShown
	default:
		return usageErrorf("%s: %v; run 'meshctl %s --help'", c.name, err, c.name)
	}
}

// parseInterleaved parses flags wherever they stand among the arguments ("user delete bob
// --json" as well as "user delete --json bob"); "--" ends the flags.
func parseInterleaved(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	return fs.Parse(append([]string{"--"}, pos...))
}

// errHelpShown ends a command that printed its help; Run turns it into success.
var errHelpShown = errors.New("help shown")

func printHelp(w io.Writer) error {
	var b strings.Builder
	b.WriteString(`meshctl runs and drives Meshwork, an edge mesh for cloud development environments.

Usage:
  meshctl [--coord URL] [--token KEY] [--json] COMMAND [ARGS...]

Commands:
`)
	for _, c := range commands {
		if !c.hidden {
			fmt.Fprintf(&b, "  %-10s %s\n", c.name, c.summary)
		}
	}
	b.WriteString(`
Global flags (accepted by every command):
  --coord URL   coord's admin API address (env MESHCTL_COORD)
  --token KEY   an API key, mk_... (env MESHCTL_TOKEN)
  --json        print JSON instead of text

Run 'meshctl COMMAND --help' for a command's flags and examples.
`)
	_, err := io.WriteString(w, b.String())
	return err
}
