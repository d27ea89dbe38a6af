package ctl

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/workspace/compose"
)

var envCmd = group("env", "Run compose files as services on a machine; connect workspaces to them",
	&command{name: "create", summary: "Create an environment from a compose file and wait until every service is ready",
		usage: "NAME -f compose.yaml --machine M [--owner USER] [--wait=false] [--timeout DUR]",
		examples: []string{"meshctl env create staging -f compose.yaml --machine wm1",
			"DB_PASS=s3cret meshctl env create staging -f compose.yaml --machine wm1   # a secret with environment: DB_PASS",
			"cat compose.yaml | meshctl env create staging -f - --machine wm1 --wait=false"}, run: envCreate},
	&command{name: "list", summary: "List environments: machine, desired state, services and how many are ready", usage: "[--json]",
		examples: []string{"meshctl env list", "meshctl env list --json"}, run: envList},
	&command{name: "status", summary: "Show each service of an environment: state, health, address, ports, restarts, last error", usage: "NAME [--json]",
		examples: []string{"meshctl env status staging", "meshctl env status staging --json"}, run: envStatus},
	&command{name: "logs", summary: "Print the output of one service, or of all (each line prefixed with its service)",
		usage:    "NAME [SERVICE] [--follow] [--tail N] [--socket PATH]",
		examples: []string{"meshctl env logs staging redis", "meshctl env logs staging --follow --tail 20"}, run: envLogs},
	&command{name: "update", summary: "Replace an environment's compose file: only the services whose definition changed are recreated",
		usage:    "NAME -f compose.yaml [--wait=false] [--timeout DUR]",
		examples: []string{"meshctl env update staging -f compose.yaml"}, run: envUpdate},
	&command{name: "down", summary: "Stop an environment's containers, keeping its volumes and addresses", usage: "NAME [--wait=false] [--timeout DUR]",
		examples: []string{"meshctl env down staging"}, run: envSetter("down")},
	&command{name: "up", summary: "Start a stopped environment and wait until every service is ready", usage: "NAME [--wait=false] [--timeout DUR]",
		examples: []string{"meshctl env up staging"}, run: envSetter("up")},
	&command{name: "delete", summary: "Delete an environment: its containers, volumes and addresses", usage: "NAME",
		examples: []string{"meshctl env delete staging"},
		run:      envDelete},
	&command{name: "connect", summary: "Connect a workspace to an environment: its bare service names resolve inside the workspace",
		usage: "WS ENV", examples: []string{"meshctl env connect api staging   # then, inside api: redis-cli -h redis ping"}, run: envConnect},
	&command{name: "disconnect", summary: "Disconnect a workspace from its environment", usage: "WS",
		examples: []string{"meshctl env disconnect api"}, run: envDisconnect},
)

// composeFlags are the flags naming a compose file: -f FILE (or --file; "-" is stdin).
func composeFlags(fs *flag.FlagSet) *string {
	f := fs.String("f", "", "the compose `file` (- reads it from stdin)")
	fs.StringVar(f, "file", "", "the compose `file`, as -f")
	return f
}

// waitFlags are --wait and --timeout.
func waitFlags(fs *flag.FlagSet, what string) (*bool, *time.Duration) {
	return fs.Bool("wait", true, "wait until "+what+", showing each service's progress"),
		fs.Duration("timeout", 5*time.Minute, "how long to wait")
}

func envCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	var req api.CreateEnvironment
	file := composeFlags(fs)
	fs.StringVar(&req.Machine, "machine", "", "the `machine` (node name) to run it on; see meshctl node list")
	fs.StringVar(&req.Owner, "owner", "", "the `user` it belongs to (admins only; default: you)")
	wait, timeout := waitFlags(fs, "every service is ready (or one fails)")
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	req.Name = fs.Arg(0)
	if req.Machine == "" || *file == "" {
		return usageErrorf("env create: -f compose.yaml and --machine are required (-f - reads stdin; see meshctl node list for machines)")
	}
	var err error
	if req.Compose, req.Variables, err = e.readCompose(req.Name, *file); err != nil {
		return err
	}
	var out api.Environment
	if err := e.call(ctx, "POST", "/v1/environments", req, &out); err != nil {
		return err
	}
	if !*wait {
		if e.global.json {
			return e.printJSON(out)
		}
		return e.printf("created environment %s on %s (%s); it starts once %s's agent picks it up: meshctl env status %s\n",
			out.Name, out.Machine, serviceNames(out), out.Machine, out.Name)
	}
	if !e.global.json {
		e.printf("created environment %s on %s (%s)\n", out.Name, out.Machine, serviceNames(out))
	}
	return e.waitEnvironment(ctx, &envWait{name: out.Name, up: true, timeout: *timeout, gen: out.Generation})
}

// maxCompose is the largest compose file coord takes.
const maxCompose = 256 << 10

// readCompose reads the compose file at path ("-": stdin) and checks it as coord will, so a
// broken file fails before any request. It returns the file's text and the values of the
// variables its secrets and configs take their content from (environment: VAR), from
// meshctl's own environment.
func (e *env) readCompose(name, path string) (string, map[string]string, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(e.stdin, maxCompose+1))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", nil, fmt.Errorf("%s: reading the compose file: %w", e.cmd.name, err)
	}
	if len(b) > maxCompose {
		return "", nil, fmt.Errorf("%s: the compose file is %d bytes; coord takes at most %d KiB: split the environment in two", e.cmd.name, len(b), maxCompose>>10)
	}
	p, err := compose.Load(name, b)
	if err != nil {
		return "", nil, fmt.Errorf("environment %q: %w", name, err) // as coord says it
	}
	vars, err := composeVariables(p, os.LookupEnv)
	if err != nil {
		return "", nil, err
	}
	return string(b), vars, nil
}

// composeVariables finds the values of the variables p's secrets and configs name as their
// source (environment: VAR), or says which one is unset and how to set it.
func composeVariables(p *compose.Project, lookup func(string) (string, bool)) (map[string]string, error) {
	var vars map[string]string
	for _, s := range p.Services {
		for _, f := range fileSources(s) {
			if f.FromEnv == "" {
				continue
			}
			v, ok := lookup(f.FromEnv)
			if !ok {
				return nil, fmt.Errorf("service %q: %s %q takes its value from the variable %s (environment: %s), which is not set here: export %s=… and run this again",
					s.Name, f.kind, f.Name, f.FromEnv, f.FromEnv, f.FromEnv)
			}
			if vars == nil {
				vars = map[string]string{}
			}
			vars[f.FromEnv] = v
		}
	}
	return vars, nil
}

type source struct {
	compose.File
	kind string // "secret" or "config"
}

func fileSources(s compose.Spec) []source {
	var out []source
	for _, f := range s.Secrets {
		out = append(out, source{f, "secret"})
	}
	for _, f := range s.Configs {
		out = append(out, source{f, "config"})
	}
	return out
}

func serviceNames(env api.Environment) string {
	var names []string
	for _, s := range env.Services {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}

func envList(ctx context.Context, e *env, args []string) error {
	if err := e.args(e.flags(), args, 0); err != nil {
		return err
	}
	var list []api.Environment
	if err := e.call(ctx, "GET", "/v1/environments", nil, &list); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(list)
	}
	if len(list) == 0 {
		return e.printf("no environments yet; create one with: meshctl env create NAME -f compose.yaml --machine M\n")
	}
	var rows [][]string
	for _, env := range list {
		rows = append(rows, []string{env.Name, env.Owner, env.Machine, env.Desired, shortList(serviceNames(env), 40), readyCount(env)})
	}
	return e.table("NAME\tOWNER\tMACHINE\tDESIRED\tSERVICES\tREADY", rows)
}

// shortList cuts a comma-separated list to about n characters.
func shortList(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := strings.LastIndex(s[:n], ", ")
	if cut < 0 {
		cut = n
	}
	return s[:cut] + ", …"
}

// readyCount is "ready/all" of an environment's services.
func readyCount(env api.Environment) string {
	n := 0
	for _, s := range env.Services {
		if s.Ready() {
			n++
		}
	}
	return fmt.Sprintf("%d/%d", n, len(env.Services))
}

func (e *env) getEnvironment(ctx context.Context, name string) (api.Environment, error) {
	var out api.Environment
	err := e.call(ctx, "GET", "/v1/environments/"+url.PathEscape(name), nil, &out)
	return out, withHint(err, "meshctl env list shows yours")
}

// withHint adds hint to a not-found error of coord's that gives none.
func withHint(err error, hint string) error {
	var ae *api.Error
	if errors.As(err, &ae) && ae.Code == api.CodeNotFound && !strings.Contains(ae.Message, "meshctl") {
		return fmt.Errorf("%w (%s)", err, hint)
	}
	return err
}

func envStatus(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	env, err := e.getEnvironment(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(env)
	}
	e.printf("environment %s on %s, owner %s: desired %s, %s ready\n", env.Name, env.Machine, env.Owner, env.Desired, readyCount(env))
	if names := dnsPattern(env); names != "" {
		e.printf("services are reached as %s on the mesh, or by bare name from a connected workspace\n", names)
	}
	e.printf("\n")
	var rows [][]string
	for _, s := range env.Services {
		rows = append(rows, []string{s.Name, cmp.Or(s.State, "-"), cmp.Or(s.Health, "-"), cmp.Or(s.IPv4, "-"),
			portList(s.Ports), strconv.Itoa(s.Restarts), lastWord(s)})
	}
	if err := e.table("SERVICE\tSTATE\tHEALTH\tADDRESS\tPORTS\tRESTARTS\tLAST ERROR / EXIT", rows); err != nil {
		return err
	}
	for _, s := range env.Services {
		if s.Health == api.HealthUnhealthy {
			e.printf("\n%s is unhealthy; its last health check said:\n%s\n", s.Name, indent(cmp.Or(s.HealthOutput, "(nothing)")))
		}
	}
	return nil
}

// dnsPattern is "<service>.<env>.<domain>" as the environment's services are named.
func dnsPattern(env api.Environment) string {
	for _, s := range env.Services {
		if rest, ok := strings.CutPrefix(s.DNSName, s.Name+"."); ok {
			return "<service>." + strings.TrimSuffix(rest, ".")
		}
	}
	return ""
}

func portList(ports []int) string {
	if len(ports) == 0 {
		return "-"
	}
	var s []string
	for _, p := range ports {
		s = append(s, strconv.Itoa(p))
	}
	return strings.Join(s, ",")
}

// lastWord is a service's last error, or how a job ended.
func lastWord(s api.Service) string {
	var parts []string
	if s.State == api.ServiceExited || s.ExitCode != 0 {
		parts = append(parts, fmt.Sprintf("exit %d", s.ExitCode))
	}
	if s.Reason != "" {
		parts = append(parts, firstLine(s.Reason, 80))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ": ")
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

// firstLine is s's first line, cut to about n characters.
func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

func envUpdate(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	file := composeFlags(fs)
	wait, timeout := waitFlags(fs, "every service is ready (or one fails)")
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	name := fs.Arg(0)
	if *file == "" {
		return usageErrorf("env update: -f compose.yaml is required (-f - reads stdin)")
	}
	var req api.UpdateEnvironment
	var err error
	if req.Compose, req.Variables, err = e.readCompose(name, *file); err != nil {
		return err
	}
	var out api.Environment
	if err := e.call(ctx, "PUT", "/v1/environments/"+url.PathEscape(name), req, &out); err != nil {
		return err
	}
	if !*wait {
		if e.global.json {
			return e.printJSON(out)
		}
		return e.printf("updated environment %s; %s recreates the services whose definition changed (meshctl env status %s)\n", name, out.Machine, name)
	}
	if !e.global.json {
		e.printf("updated environment %s (%s)\n", name, serviceNames(out))
	}
	return e.waitEnvironment(ctx, &envWait{name: name, up: true, timeout: *timeout, gen: out.Generation})
}

func envDelete(ctx context.Context, e *env, args []string) error {
	err := remover("/v1/environments/", "deleted environment %s; its machine removes its containers, volumes and addresses")(ctx, e, args)
	return withHint(err, "meshctl env list shows yours")
}

// envSetter is `env up` or `env down`.
func envSetter(verb string) func(ctx context.Context, e *env, args []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		fs := e.flags()
		what := "every service is ready (or one fails)"
		if verb == "down" {
			what = "every service is stopped"
		}
		wait, timeout := waitFlags(fs, what)
		if err := e.args(fs, args, 1); err != nil {
			return err
		}
		name := fs.Arg(0)
		var out api.Environment
		if err := e.call(ctx, "POST", "/v1/environments/"+url.PathEscape(name)+"/"+verb, nil, &out); err != nil {
			return withHint(err, "meshctl env list shows yours")
		}
		if !*wait {
			if e.global.json {
				return e.printJSON(out)
			}
			return e.printf("environment %s: wanted %s\n", name, out.Desired)
		}
		return e.waitEnvironment(ctx, &envWait{name: name, up: verb == "up", timeout: *timeout, gen: out.Generation})
	}
}

func envConnect(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.args(fs, args, 2); err != nil {
		return err
	}
	wsName, envName := fs.Arg(0), fs.Arg(1)
	prev, err := e.getWorkspace(ctx, wsName)
	if err != nil {
		return err
	}
	ws, err := e.connect(ctx, wsName, envName)
	if err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(ws)
	}
	names := e.bareNames(ctx, envName)
	switch prev.Env {
	case envName:
		return e.printf("workspace %s was already connected to %s; it resolves %s\n", wsName, envName, names)
	case "":
		return e.printf("workspace %s now resolves %s of %s, and may reach them; inside it, try: getent hosts %s\n",
			wsName, names, envName, firstName(names))
	}
	return e.printf("workspace %s now resolves %s of %s instead of those of %s (no restart needed)\n", wsName, names, envName, prev.Env)
}

func envDisconnect(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	wsName := fs.Arg(0)
	prev, err := e.getWorkspace(ctx, wsName)
	if err != nil {
		return err
	}
	if prev.Env == "" && !e.global.json {
		return e.printf("workspace %s is not connected to an environment; nothing changed\n", wsName)
	}
	ws, err := e.connect(ctx, wsName, "")
	if err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(ws)
	}
	return e.printf("workspace %s no longer resolves %s of %s (meshctl env connect %s %s connects it again)\n",
		wsName, e.bareNames(ctx, prev.Env), prev.Env, wsName, prev.Env)
}

func (e *env) getWorkspace(ctx context.Context, name string) (api.Workspace, error) {
	var ws api.Workspace
	err := e.call(ctx, "GET", "/v1/workspaces/"+url.PathEscape(name), nil, &ws)
	return ws, withHint(err, "meshctl ws list shows yours")
}

func (e *env) connect(ctx context.Context, ws, envName string) (api.Workspace, error) {
	var out api.Workspace
	err := e.call(ctx, "PUT", "/v1/workspaces/"+url.PathEscape(ws)+"/env", api.Connect{Env: envName}, &out)
	return out, err
}

// bareNames lists envName's service names ("its services" when they cannot be read).
func (e *env) bareNames(ctx context.Context, envName string) string {
	env, err := e.getEnvironment(ctx, envName)
	if err != nil || len(env.Services) == 0 {
		return "the service names"
	}
	return serviceNames(env)
}

func firstName(names string) string {
	first, _, _ := strings.Cut(names, ",")
	return first
}
