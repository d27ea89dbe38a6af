package ctl

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"meshwork.dev/coord/api"
)

// group makes a `<noun> <verb>` command out of its verbs. A verb's name in help and errors is
// "noun verb".
func group(name, summary string, verbs ...*command) *command {
	g := &command{name: name, summary: summary}
	var names []string
	for _, v := range verbs {
		names = append(names, v.name)
		v.name = name + " " + v.name
	}
	g.usage = strings.Join(names, "|") + " ..."
	for _, v := range verbs {
		g.examples = append(g.examples, v.examples[0])
	}
	g.run = func(ctx context.Context, e *env, args []string) error {
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			g.flags(e).Usage()
			fmt.Fprintf(e.stdout, "\nVerbs:\n")
			for _, v := range verbs {
				fmt.Fprintf(e.stdout, "  %-22s %s\n", v.name, v.summary)
			}
			if len(args) == 0 {
				return usageErrorf("%s: which one? %s", name, strings.Join(names, ", "))
			}
			return nil
		}
		for _, v := range verbs {
			if v.name == name+" "+args[0] {
				e.cmd = v
				return v.run(ctx, e, args[1:])
			}
		}
		return usageErrorf("%s: unknown verb %q; one of %s", name, args[0], strings.Join(names, ", "))
	}
	return g
}

// client is the admin API client the global flags describe.
func (e *env) client() (*api.Client, error) {
	if e.global.coord == "" && e.global.token == "" {
		if c := workspaceClient(); c != nil {
			return c, nil // inside a workspace: its own API, as its owner
		}
	}
	if e.global.coord == "" {
		return nil, usageErrorf("%s: no coord address; pass --coord URL or set MESHCTL_COORD", e.cmd.name)
	}
	if e.global.token == "" {
		return nil, usageErrorf("%s: no API key; pass --token KEY or set MESHCTL_TOKEN (a new cluster's admin key is in STATE/admin.key)", e.cmd.name)
	}
	return &api.Client{Base: e.global.coord, Token: e.global.token}, nil
}

// call sends one admin API request with the global --coord and --token.
func (e *env) call(ctx context.Context, method, path string, in, out any) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	return c.Do(ctx, method, path, in, out)
}

// remover is a verb that deletes (or revokes) the object named by its one argument at
// prefix/NAME and says so.
func remover(prefix, done string) func(ctx context.Context, e *env, args []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		fs := e.flags()
		if err := e.args(fs, args, 1); err != nil {
			return err
		}
		if err := e.call(ctx, "DELETE", prefix+url.PathEscape(fs.Arg(0)), nil, nil); err != nil {
			return err
		}
		return e.printf(done+"\n", fs.Arg(0))
	}
}

// args parses args and checks that exactly want positional arguments remain.
func (e *env) args(fs *flag.FlagSet, args []string, want int) error {
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != want {
		return usageErrorf("%s: want %d argument(s) (%s), got %d; run 'meshctl %s --help'",
			e.cmd.name, want, e.cmd.usage, fs.NArg(), e.cmd.name)
	}
	return nil
}

// printJSON writes v as indented JSON: the stable --json form of every listing.
func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under a header, columns aligned.
func (e *env) table(header string, rows [][]string) error {
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	return w.Flush()
}

// when prints a time for tables: "-" for none.
func when(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

func (e *env) printf(format string, args ...any) error {
	_, err := fmt.Fprintf(e.stdout, format, args...)
	return err
}
