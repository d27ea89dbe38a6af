package ctl

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/node"
	"meshwork.dev/node/agent"
)

var wsCmd = group("ws", "Create, list, start, stop and delete workspaces (dev containers)",
	&command{name: "create", summary: "Create a workspace on a machine and wait until it runs",
		usage: "NAME --machine M --image REF [--cpu N] [--memory SIZE] [--owner USER] [--exit NAME] [--wait=false] [--timeout DUR]",
		examples: []string{"meshctl ws create api --machine wm1 --image docker.io/library/debian:12",
			"meshctl ws create api --machine wm1 --image meshwork.dev/dev:1 --cpu 2 --memory 4g",
			"meshctl ws create api --machine wm1 --image meshwork.dev/dev:1 --exit fra"}, run: wsCreate},
	&command{name: "list", summary: "List workspaces with their state and connected environment", usage: "[--json]",
		examples: []string{"meshctl ws list", "meshctl ws list --json"}, run: wsList},
	&command{name: "start", summary: "Start a stopped workspace (its home and files are as it left them)", usage: "NAME [--wait=false]",
		examples: []string{"meshctl ws start api"}, run: wsSetter("start", api.Running)},
	&command{name: "stop", summary: "Stop a workspace, keeping its home and workspace directory", usage: "NAME [--wait=false]",
		examples: []string{"meshctl ws stop api"}, run: wsSetter("stop", api.Stopped)},
	&command{name: "logs", summary: "Print a workspace's output, from its machine over the mesh", usage: "NAME [--follow] [--tail N] [--socket PATH]",
		examples: []string{"meshctl ws logs api", "meshctl ws logs api --follow --tail 20"}, run: wsLogs},
	&command{name: "set-exit", summary: "Pin a workspace's internet traffic to an exit, or (none) back to its machine's uplink, live", usage: "WS EXIT|none",
		examples: []string{"meshctl ws set-exit api fra", "meshctl ws set-exit api none"}, run: wsSetExit},
	&command{name: "delete", summary: "Delete a workspace: its container, disk and address (the shared home stays)", usage: "NAME",
		examples: []string{"meshctl ws delete api"}, run: remover("/v1/workspaces/", "deleted workspace %s; its machine removes the container")},
)

func wsCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	var req api.CreateWorkspace
	fs.StringVar(&req.Machine, "machine", "", "the `machine` (node name) to run it on; see meshctl node list")
	fs.StringVar(&req.Image, "image", "", "container image `ref`erence")
	fs.Float64Var(&req.CPU, "cpu", 0, "CPU limit in `cores` (0: none)")
	fs.StringVar(&req.Memory, "memory", "", "memory limit, a `size` such as 512m or 4g (default: none)")
	fs.StringVar(&req.Owner, "owner", "", "the `user` it belongs to (admins only; default: you)")
	fs.StringVar(&req.Exit, "exit", "", "pin its internet traffic to this `exit` (see meshctl exit list; default: its machine's uplink)")
	wait := fs.Bool("wait", true, "wait until the workspace runs (or fails), showing its progress")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait")
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	req.Name = fs.Arg(0)
	if req.Machine == "" || req.Image == "" {
		return usageErrorf("ws create: --machine and --image are required; see meshctl node list for machines")
	}
	var ws api.Workspace
	if err := e.call(ctx, "POST", "/v1/workspaces", req, &ws); err != nil {
		return err
	}
	if e.global.json && !*wait {
		return e.printJSON(ws)
	}
	if !e.global.json {
		e.printf("created workspace %s on %s (%s)\n", ws.Name, ws.Machine, ws.IPv4)
	}
	if !*wait {
		return e.printf("it starts once %s's agent picks it up: meshctl ws list\n", ws.Machine)
	}
	return e.waitWorkspace(ctx, ws.Name, api.Running, *timeout)
}

// wsSetter is `ws start` or `ws stop`.
func wsSetter(verb, desired string) func(ctx context.Context, e *env, args []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		fs := e.flags()
		wait := fs.Bool("wait", true, "wait until the workspace is "+desired)
		timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait")
		if err := e.args(fs, args, 1); err != nil {
			return err
		}
		name := fs.Arg(0)
		var ws api.Workspace
		if err := e.call(ctx, "POST", "/v1/workspaces/"+url.PathEscape(name)+"/"+verb, nil, &ws); err != nil {
			return err
		}
		if !*wait {
			if e.global.json {
				return e.printJSON(ws)
			}
			return e.printf("workspace %s: wanted %s\n", name, desired)
		}
		return e.waitWorkspace(ctx, name, desired, *timeout)
	}
}

// waitWorkspace follows a workspace until its machine reports it in state want (or failed),
// printing each state it passes through.
func (e *env) waitWorkspace(ctx context.Context, name, want string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		var ws api.Workspace
		if err := e.call(ctx, "GET", "/v1/workspaces/"+url.PathEscape(name), nil, &ws); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("workspace %s is %s after %v, not yet %s; its machine's agent log says why (meshctl ws list shows the state)", name, last, timeout, want)
			}
			return err
		}
		if now := ws.State + " " + ws.Reason; now != last && !e.global.json && ws.State != "failed" {
			e.printf("  %s%s\n", ws.State, reasonSuffix(ws.Reason))
			last = now
		}
		switch ws.State {
		case want:
			if e.global.json {
				return e.printJSON(ws)
			}
			if want == api.Running {
				return e.printf("workspace %s is running at %s; reach it as %s on the mesh\n", name, ws.IPv4, name)
			}
			return e.printf("workspace %s is stopped; its files are kept (meshctl ws start %s brings it back)\n", name, name)
		case "failed":
			return fmt.Errorf("workspace %s failed: %s", name, failedReason(ws))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("workspace %s is %q after %v, not yet %s: is its machine's agent running? (meshctl node list)", name, ws.State, timeout, want)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// failedReason is why a failed workspace failed and how to be rid of it: it keeps its name and
// address until deleted.
func failedReason(w api.Workspace) string {
	return fmt.Sprintf("%s; or meshctl ws delete %s", cmp.Or(w.Reason, "its machine gave no reason"), w.Name)
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}

func wsList(ctx context.Context, e *env, args []string) error {
	if err := e.args(e.flags(), args, 0); err != nil {
		return err
	}
	var list []api.Workspace
	if err := e.call(ctx, "GET", "/v1/workspaces", nil, &list); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(list)
	}
	if len(list) == 0 {
		return e.printf("no workspaces yet; create one with: meshctl ws create NAME --machine M --image REF\n")
	}
	var rows [][]string
	for _, w := range list {
		state := w.State
		if w.Desired == api.Stopped && state != api.Stopped {
			state += " (stopping)"
		}
		reason := w.Reason
		if w.State == "failed" {
			reason = failedReason(w)
		}
		rows = append(rows, []string{w.Name, w.Machine, state, cmp.Or(w.Env, "-"), exitColumn(w), w.IPv4, w.Owner, w.Image, limits(w), reason})
	}
	return e.table("NAME\tMACHINE\tSTATE\tENV\tEXIT\tIPV4\tOWNER\tIMAGE\tLIMITS\tREASON", rows)
}

// exitColumn is a workspace's exit and, once its machine has checked, how its egress fares.
func exitColumn(w api.Workspace) string {
	switch {
	case w.Exit == "":
		return "-"
	case w.EgressState == api.EgressFailed:
		return w.Exit + " (egress-failed: " + cmp.Or(w.EgressReason, "no reason given") + ")"
	case w.EgressState != "":
		return w.Exit + " (" + w.EgressState + ")"
	}
	return w.Exit
}

// wsSetExit pins a workspace's egress to an exit, or (none) unpins it.
func wsSetExit(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.args(fs, args, 2); err != nil {
		return err
	}
	name, exit := fs.Arg(0), fs.Arg(1)
	if exit == "none" {
		exit = ""
	}
	var ws api.Workspace
	if err := e.call(ctx, "POST", "/v1/workspaces/"+url.PathEscape(name)+"/exit", api.SetExit{Exit: exit}, &ws); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(ws)
	}
	if exit == "" {
		return e.printf("workspace %s: egress through its machine's uplink again\n", name)
	}
	return e.printf("workspace %s: egress pinned to exit %s\n", name, exit)
}

func limits(w api.Workspace) string {
	s := ""
	if w.CPU > 0 {
		s = strconv.FormatFloat(w.CPU, 'g', -1, 64) + " cpu"
	}
	if w.Memory > 0 {
		if s != "" {
			s += ", "
		}
		s += strconv.FormatInt(w.Memory>>20, 10) + " MiB"
	}
	if s == "" {
		return "-"
	}
	return s
}

// wsLogs asks the workspace's machine for its log, over the mesh through the local daemon:
// the machine knows the caller by its mesh identity.
func wsLogs(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	state, socket := daemonPaths(fs)
	follow := fs.Bool("follow", false, "keep printing what it writes")
	tail := fs.Int("tail", 0, "print only the last `N` lines (0: all)")
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	var ws api.Workspace
	if err := e.call(ctx, "GET", "/v1/workspaces/"+url.PathEscape(fs.Arg(0)), nil, &ws); err != nil {
		return err
	}
	q := url.Values{"tail": {strconv.Itoa(*tail)}}
	if *follow {
		q.Set("follow", "1")
	}
	res, err := machineDo(ctx, socketPath(*state, *socket), ws.Machine, "GET", "/v1/workspaces/"+url.PathEscape(ws.Name)+"/logs?"+q.Encode())
	if err != nil {
		return fmt.Errorf("ws logs: %w", err)
	}
	defer res.Body.Close()
	n, err := io.Copy(e.stdout, res.Body)
	if ctx.Err() != nil {
		return nil // Ctrl-C ends --follow
	}
	if err == nil && n == 0 && !*follow {
		fmt.Fprintf(e.stderr, "workspace %s has written nothing yet: its log is what its main process prints (meshctl ws logs %s --follow waits for more)\n", ws.Name, ws.Name)
	}
	return err
}

// machineDo sends a request to a workmachine's machine API over the mesh, through the local
// daemon (the machine knows the caller by its mesh identity), and fails on a non-2xx answer.
func machineDo(ctx context.Context, sock, machine, method, path string) (*http.Response, error) {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return node.DialVia(sock, net.JoinHostPort(machine, strconv.Itoa(agent.MachinePort)))
	}}}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+machine+path, nil)
	if err != nil {
		return nil, err
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reaching %s over the mesh: %w", machine, err)
	}
	if res.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
		res.Body.Close()
		return nil, fmt.Errorf("%s: %s", machine, strings.TrimSpace(string(b)))
	}
	return res, nil
}

// machineCall is machineDo decoding a JSON answer into out (nil: none).
func machineCall(ctx context.Context, sock, machine, method, path string, out any) error {
	res, err := machineDo(ctx, sock, machine, method, path)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(res.Body).Decode(out)
}
