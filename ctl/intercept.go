package ctl

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"meshwork.dev/coord/api"
)

const interceptAbout = `An intercept sends an environment service's port to a port of your workspace, over the mesh.
Global (no --header): every new connection to the port goes to the workspace, whoever makes it
(the environment's other services, connected workspaces, laptops). Connections open before the
start keep their path until they close; so do those open at the stop.
Personal (--header K=V, repeatable): an HTTP-aware proxy in front of the port sends each request
carrying every one of the headers to the workspace, and every other request to the service, per
request on keep-alive connections (HTTP/1.1, h2c, WebSocket upgrades, gRPC). Several people can
hold personal intercepts on one port, each with their own headers; a global intercept and
personal ones cannot share a port.
While the workspace does not answer on its port (stopped, gone, nothing listening), traffic
goes to the service again (state target-down) until it does. Only the workspace's owner or an
admin may send traffic to it; intercepting a service needs rights on its environment. Inside a
workspace, --to :PORT means this workspace.`

var interceptCmd = group("intercept", "Send an environment service's traffic to your workspace: all of it, or requests with your headers",
	&command{name: "start", summary: "Start an intercept and wait until the service's machine applies it",
		usage: "ENV/SVC:PORT --to WS:PORT [--header K=V]... [--name N] [--wait=false] [--timeout DUR]", about: interceptAbout,
		examples: []string{"meshctl intercept start staging/api:8080 --to dev:3000",
			"meshctl intercept start staging/api:8080 --to dev:3000 --header X-Dev=alice --name alice-api",
			"meshctl intercept start staging/api:8080 --to :3000 --header X-Dev=alice   # inside workspace dev"}, run: interceptStart},
	&command{name: "list", summary: "List intercepts: mode, target, workspace, headers, state and what they diverted", usage: "[--json]",
		examples: []string{"meshctl intercept list", "meshctl intercept list --json"}, run: interceptList},
	&command{name: "status", summary: "Show one intercept: mode, target, whether the workspace answers, what it diverted, since when",
		usage: "ID|NAME [--json]", examples: []string{"meshctl intercept status alice-api"}, run: interceptStatus},
	&command{name: "stop", summary: "Stop an intercept: new connections and requests go to the service again", usage: "ID|NAME",
		about: "Connections open at the stop keep their path until they close.", examples: []string{"meshctl intercept stop alice-api"}, run: interceptStop},
)

func init() { interceptCmd.about = interceptAbout }

// headerFlags collects --header K=V matchers.
type headerFlags []api.HeaderMatch

func (h *headerFlags) String() string { return "" }

func (h *headerFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(k) == "" || v == "" {
		return fmt.Errorf("header %q: want NAME=VALUE, as X-Dev=alice", s)
	}
	*h = append(*h, api.HeaderMatch{Name: strings.TrimSpace(k), Value: v})
	return nil
}

// parseTarget splits ENV/SVC:PORT.
func parseTarget(s string) (env, svc string, port int, err error) {
	es, p, ok := strings.Cut(s, ":")
	env, svc, ok2 := strings.Cut(es, "/")
	port, perr := strconv.Atoi(p)
	if !ok || !ok2 || env == "" || svc == "" || perr != nil || port < 1 || port > 65535 {
		return "", "", 0, usageErrorf("intercept start: %q: want ENV/SVC:PORT, as staging/api:8080", s)
	}
	return env, svc, port, nil
}

// parseTo splits WS:PORT (WS empty: this workspace).
func parseTo(s string) (ws string, port int, err error) {
	ws, p, ok := strings.Cut(s, ":")
	port, perr := strconv.Atoi(p)
	if !ok || perr != nil || port < 1 || port > 65535 {
		return "", 0, usageErrorf("intercept start: --to %q: want WS:PORT, as dev:3000 (or :3000 inside a workspace)", s)
	}
	return ws, port, nil
}

func interceptStart(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	var headers headerFlags
	to := fs.String("to", "", "the workspace's `WS:PORT` that receives the traffic, as dev:3000 (:PORT inside a workspace: this one)")
	name := fs.String("name", "", "a `name` to use instead of its ID")
	fs.Var(&headers, "header", "send only the HTTP requests carrying this header, `K=V` as X-Dev=alice (repeatable: all must match); none: every connection")
	wait := fs.Bool("wait", true, "wait until the service's machine applies it")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait")
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	req, err := e.interceptRequest(fs.Arg(0), *to, *name, headers)
	if err != nil {
		return err
	}
	var ic api.Intercept
	if err := e.call(ctx, "POST", "/v1/intercepts", req, &ic); err != nil {
		return err
	}
	if !e.global.json {
		e.printf("started intercept %s: %s\n", interceptRef(ic), describe(ic))
	}
	if !*wait {
		if e.global.json {
			return e.printJSON(ic)
		}
		return e.printf("its machine applies it shortly: meshctl intercept status %s\n", interceptRef(ic))
	}
	return e.waitIntercept(ctx, interceptRef(ic), *timeout, 0)
}

// interceptRequest builds a start's request from its arguments; --to :PORT needs to run
// inside a workspace (whose own API fills in the workspace).
func (e *env) interceptRequest(target, to, name string, headers headerFlags) (api.CreateIntercept, error) {
	var req api.CreateIntercept
	var err error
	if req.Env, req.Service, req.Port, err = parseTarget(target); err != nil {
		return req, err
	}
	if to == "" {
		return req, usageErrorf("intercept start: --to WS:PORT is required: the workspace and port that receive the traffic")
	}
	if req.Workspace, req.WorkspacePort, err = parseTo(to); err != nil {
		return req, err
	}
	if req.Workspace == "" && (e.global.coord != "" || e.global.token != "" || workspaceClient() == nil) {
		return req, usageErrorf("intercept start: --to :%d means this workspace, inside one; from outside, name it: --to WS:%d", req.WorkspacePort, req.WorkspacePort)
	}
	req.Name, req.Headers = name, headers
	return req, nil
}

// interceptRef is how meshctl names an intercept: its name, or its ID.
func interceptRef(ic api.Intercept) string { return cmp.Or(ic.Name, ic.ID) }

// describe says what an intercept does, in a line.
func describe(ic api.Intercept) string {
	what := "every new connection"
	if ic.Mode == api.InterceptPersonal {
		what = "requests with " + headerList(ic.Headers, ": ", ", ")
	}
	return fmt.Sprintf("%s to %s/%s:%d goes to %s:%d (%s)", what, ic.Env, ic.Service, ic.Port, ic.Workspace, ic.WorkspacePort, ic.Mode)
}

func headerList(hs []api.HeaderMatch, eq, sep string) string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Name+eq+h.Value)
	}
	return strings.Join(out, sep)
}

// waitIntercept polls intercept ref until its machine applied it (active, or target-down:
// applied, the workspace not answering), fails, or timeout passes; every 0 is 100 ms.
func (e *env) waitIntercept(ctx context.Context, ref string, timeout, every time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var ic api.Intercept
	for {
		err := e.call(ctx, "GET", "/v1/intercepts/"+url.PathEscape(ref), nil, &ic)
		switch {
		case err != nil && ctx.Err() == nil:
			return err
		case err == nil && ic.State == api.InterceptFailed:
			return fmt.Errorf("intercept %s failed on the service's machine: %s; meshctl intercept stop %s, fix it, and start it again", ref, cmp.Or(ic.Reason, "no reason given"), ref)
		case err == nil && (ic.State == api.InterceptActive || ic.State == api.InterceptTargetDown):
			return e.applied(ic)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("intercept %s is still %s after %v: the machine running %s/%s has not applied it (is its agent running? meshctl node list; meshctl env status %s)",
				ref, cmp.Or(ic.State, api.InterceptPending), timeout, ic.Env, ic.Service, ic.Env)
		case <-time.After(cmp.Or(every, 100*time.Millisecond)):
		}
	}
}

// applied says where the traffic goes now.
func (e *env) applied(ic api.Intercept) error {
	if e.global.json {
		return e.printJSON(ic)
	}
	if ic.State == api.InterceptTargetDown {
		return e.printf("target-down: %s:%d does not answer, so traffic still goes to %s until it does%s\n", ic.Workspace, ic.WorkspacePort, ic.Service, reasonSuffix(ic.Reason))
	}
	return e.printf("active: traffic goes to %s:%d; meshctl intercept stop %s sends it back\n", ic.Workspace, ic.WorkspacePort, interceptRef(ic))
}

func interceptList(ctx context.Context, e *env, args []string) error {
	if err := e.args(e.flags(), args, 0); err != nil {
		return err
	}
	var list []api.Intercept
	if err := e.call(ctx, "GET", "/v1/intercepts", nil, &list); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(list)
	}
	if len(list) == 0 {
		return e.printf("no intercepts; start one with: meshctl intercept start ENV/SVC:PORT --to WS:PORT\n")
	}
	var rows [][]string
	for _, ic := range list {
		rows = append(rows, []string{ic.ID, cmp.Or(ic.Name, "-"), ic.Mode, fmt.Sprintf("%s/%s:%d", ic.Env, ic.Service, ic.Port),
			fmt.Sprintf("%s:%d", ic.Workspace, ic.WorkspacePort), cmp.Or(headerList(ic.Headers, "=", ","), "-"),
			cmp.Or(ic.State, api.InterceptPending), strconv.FormatUint(ic.Connections, 10), strconv.FormatUint(ic.Requests, 10), ic.Owner})
	}
	return e.table("ID\tNAME\tMODE\tTARGET\tTO\tHEADERS\tSTATE\tCONNS\tREQS\tOWNER", rows)
}

func interceptStatus(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	var ic api.Intercept
	if err := e.call(ctx, "GET", "/v1/intercepts/"+url.PathEscape(fs.Arg(0)), nil, &ic); err != nil {
		return withHint(err, "meshctl intercept list shows yours")
	}
	if e.global.json {
		return e.printJSON(ic)
	}
	e.printf("intercept %s (ID %s), owner %s, started %s\n", interceptRef(ic), ic.ID, ic.Owner, when(&ic.CreatedAt))
	e.printf("mode:     %s\n", modeLine(ic))
	e.printf("target:   %s/%s:%d → %s:%d\n", ic.Env, ic.Service, ic.Port, ic.Workspace, ic.WorkspacePort)
	e.printf("state:    %s since %s\n", stateLine(ic), when(&ic.StateAt))
	return e.printf("diverted: %d connection(s), %d request(s)\n", ic.Connections, ic.Requests)
}

func modeLine(ic api.Intercept) string {
	if ic.Mode == api.InterceptPersonal {
		return "personal: requests with " + headerList(ic.Headers, ": ", " and ")
	}
	return "global: every new connection"
}

// stateLine says whether the workspace answers, and so where traffic goes.
func stateLine(ic api.Intercept) string {
	switch ic.State {
	case api.InterceptActive:
		return "active: the workspace answers; traffic goes to it"
	case api.InterceptTargetDown:
		return fmt.Sprintf("target-down: %s:%d does not answer; traffic goes to %s until it does%s", ic.Workspace, ic.WorkspacePort, ic.Service, reasonSuffix(ic.Reason))
	case api.InterceptFailed:
		return "failed: " + cmp.Or(ic.Reason, "its machine gave no reason")
	}
	return "pending: the service's machine has not applied it yet"
}

func interceptStop(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	if err := e.call(ctx, "DELETE", "/v1/intercepts/"+url.PathEscape(fs.Arg(0)), nil, nil); err != nil {
		return withHint(err, "meshctl intercept list shows yours")
	}
	return e.printf("stopped intercept %s: new connections and requests go to the service again (connections open now keep their path until they close)\n", fs.Arg(0))
}
