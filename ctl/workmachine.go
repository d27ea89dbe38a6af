package ctl

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"meshwork.dev/node/agent"
)

// workmachineUsage is `meshctl node` with flags and no verb: the workmachine agent.
const workmachineUsage = "--coord URL --auth-key KEY --state DIR [--hostname H] [--containerd SOCK] [--tun NAME] [--allow-lan CIDR[,CIDR]] [--pull-timeout DUR]"

// nodeOrAgent runs the workmachine agent when `meshctl node` is given flags, else a verb.
func nodeOrAgent(verbs func(ctx context.Context, e *env, args []string) error) func(ctx context.Context, e *env, args []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		if len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" {
			return runWorkmachine(ctx, e, args)
		}
		return verbs(ctx, e, args)
	}
}

// runWorkmachine parses `meshctl node`'s flags into an agent.Config and runs the agent: it
// joins the mesh on a kernel TUN and runs the workspaces coord wants here. The workspaces
// outlive it: a restarted agent adopts them.
func runWorkmachine(ctx context.Context, e *env, args []string) error {
	c := agent.DefaultConfig()
	fs := e.flags()
	fs.StringVar(&c.AuthKey, "auth-key", "", "auth `key` for the first join (meshctl authkey create); later starts reuse the identity in --state")
	fs.StringVar(&c.State, "state", c.State, "state `dir`ectory: the machine's mesh identity, homes and workspace files")
	fs.StringVar(&c.Hostname, "hostname", "", "the machine's `name` on the mesh (default: its host name)")
	fs.StringVar(&c.Containerd, "containerd", c.Containerd, "containerd's `socket`")
	fs.StringVar(&c.TUN, "tun", c.TUN, "`name` of the kernel TUN that carries the mesh")
	fs.IntVar(&c.Shield.MaxFailures, "shield-failures", c.Shield.MaxFailures, "failed SSH logins from one address (within --shield-window) that get it blocked; -1: never")
	fs.DurationVar(&c.Shield.Window, "shield-window", c.Shield.Window, "the window failed SSH logins are counted in")
	fs.DurationVar(&c.Shield.BlockFor, "shield-block", c.Shield.BlockFor, "how long a blocked address stays blocked")
	fs.DurationVar(&c.PullTimeout, "pull-timeout", c.PullTimeout, "how long an image pull may wait on a registry that does not answer before its workspace fails")
	allowLAN := fs.String("allow-lan", "", "`CIDR`s (comma-separated) that workspaces may reach through this machine although they are walled off (link-local, RFC 1918, CGNAT, ULA); the machine itself stays walled")
	fs.StringVar(&c.Tools, "tools", "", "`dir`ectory mounted read-only at /.meshwork in workspaces, with a static meshctl for their sftp subsystem (default: this binary, copied to STATE/tools)")
	err := e.args(fs, args, 0)
	if err != nil {
		return err
	}
	if c.Coord = e.global.coord; c.Coord == "" {
		return usageErrorf("node: no coord address; pass --coord URL (several, comma-separated, for a cluster)")
	}
	if c.AllowLAN, err = parseCIDRs(*allowLAN); err != nil {
		return usageErrorf("node: --allow-lan: %v", err)
	}
	if c.PullTimeout <= 0 {
		return usageErrorf("node: --pull-timeout %v: give a positive duration, e.g. 15s", c.PullTimeout)
	}
	c.Logf = func(f string, a ...any) {
		fmt.Fprintf(e.stderr, "%s %s\n", time.Now().Format("2006-01-02T15:04:05.000"), fmt.Sprintf(f, a...))
	}
	return agent.Run(ctx, c)
}

// parseCIDRs parses a comma-separated list of network prefixes (empty: none).
func parseCIDRs(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR: give a network and its length, e.g. 10.1.0.0/16", s)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%q has host bits set: did you mean %v?", s, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}
