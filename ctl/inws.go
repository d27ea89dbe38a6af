package ctl

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/node/agent"
	"meshwork.dev/workspace/ctrd"
)

// workspaceSocket is where a workspace's processes find its own API (the node serves it,
// relaying to coord, which answers as the workspace's owner).
var workspaceSocket = filepath.Join(ctrd.SocketsPath, agent.WorkspaceAPISocket)

// workspaceClient is the admin API as meshctl sees it inside a workspace: no coord address,
// no key; nil outside a workspace.
func workspaceClient() *api.Client {
	if !answers(workspaceSocket) {
		return nil
	}
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", workspaceSocket)
	}
	return &api.Client{Base: "http://workspace", HTTP: &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DialContext: dial}}}
}

// wsStatusView is `meshctl status --json` inside a workspace.
type wsStatusView struct {
	Workspace   api.Workspace    `json:"workspace"`
	Environment *api.Environment `json:"environment,omitempty"`
}

// workspaceStatus is `meshctl status` inside a workspace: the workspace, and the
// environment it is connected to with its services.
func workspaceStatus(ctx context.Context, e *env, c *api.Client) error {
	name, err := os.Hostname()
	if err != nil {
		return err
	}
	var v wsStatusView
	if err := c.Do(ctx, "GET", "/v1/workspaces/"+url.PathEscape(name), nil, &v.Workspace); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if v.Workspace.Env != "" {
		v.Environment = new(api.Environment)
		if err := c.Do(ctx, "GET", "/v1/environments/"+url.PathEscape(v.Workspace.Env), nil, v.Environment); err != nil {
			return fmt.Errorf("status: environment %s: %w", v.Workspace.Env, err)
		}
	}
	if e.global.json {
		return e.printJSON(v)
	}
	w := v.Workspace
	e.printf("workspace %s on %s: %s, %s\n", w.Name, w.Machine, w.State, strings.Join(nonEmpty(w.IPv4, w.IPv6), " "))
	e.printf("owner: %s\n", w.Owner)
	if v.Environment == nil {
		return e.printf("environment: none (meshctl env connect %s ENV, from outside, makes its services' names resolve here)\n", w.Name)
	}
	env := v.Environment
	var names []string
	rows := [][]string{}
	for _, s := range env.Services {
		names = append(names, s.Name)
		rows = append(rows, []string{s.Name, cmp.Or(s.State, "-"), cmp.Or(s.Health, "-"), cmp.Or(s.IPv4, "-"), portList(s.Ports)})
	}
	e.printf("environment: %s on %s (bare names resolve here: %s)\n", env.Name, env.Machine, strings.Join(names, ", "))
	return e.table("SERVICE\tSTATE\tHEALTH\tADDRESS\tPORTS", rows)
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
