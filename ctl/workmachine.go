package ctl

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"meshwork.dev/node"
	"meshwork.dev/node/sshd"
	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/wsnet"
)

// workmachineUsage is `meshctl node` with flags and no verb: the workmachine agent.
const workmachineUsage = "--coord URL --auth-key KEY --state DIR [--hostname H] [--containerd SOCK] [--tun NAME] [--allow-lan CIDR[,CIDR]]"

// nodeOrAgent runs the workmachine agent when `meshctl node` is given flags, else a verb.
func nodeOrAgent(verbs func(ctx context.Context, e *env, args []string) error) func(ctx context.Context, e *env, args []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		if len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" {
			return runWorkmachine(ctx, e, args)
		}
		return verbs(ctx, e, args)
	}
}

// runWorkmachine joins the mesh on a kernel TUN and runs the workspaces coord wants here.
// The workspaces outlive it: a restarted agent adopts them.
func runWorkmachine(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	authKey := fs.String("auth-key", "", "auth `key` for the first join (meshctl authkey create); later starts reuse the identity in --state")
	state := fs.String("state", "/var/lib/meshwork/node", "state `dir`ectory: the machine's mesh identity, homes and workspace files")
	hostname := fs.String("hostname", "", "the machine's `name` on the mesh (default: its host name)")
	sock := fs.String("containerd", ctrd.DefaultAddress, "containerd's `socket`")
	tunName := fs.String("tun", "meshwork0", "`name` of the kernel TUN that carries the mesh")
	var shield sshd.ShieldConfig
	fs.IntVar(&shield.MaxFailures, "shield-failures", 5, "failed SSH logins from one address (within --shield-window) that get it blocked; -1: never")
	fs.DurationVar(&shield.Window, "shield-window", time.Minute, "the window failed SSH logins are counted in")
	fs.DurationVar(&shield.BlockFor, "shield-block", 10*time.Minute, "how long a blocked address stays blocked")
	allowLAN := fs.String("allow-lan", "", "`CIDR`s (comma-separated) that workspaces may reach through this machine although they are walled off (link-local, RFC 1918, CGNAT, ULA); the machine itself stays walled")
	tools := fs.String("tools", "", "`dir`ectory mounted read-only at /.meshwork in workspaces, with a static meshctl for their sftp subsystem (default: this binary, copied to STATE/tools)")
	err := e.args(fs, args, 0)
	if err != nil {
		return err
	}
	if e.global.coord == "" {
		return usageErrorf("node: no coord address; pass --coord URL (several, comma-separated, for a cluster)")
	}
	wall := wsnet.Wall{MeshIf: *tunName}
	if wall.Allow, err = parseCIDRs(*allowLAN); err != nil {
		return usageErrorf("node: --allow-lan: %v", err)
	}
	logf := func(f string, a ...any) {
		fmt.Fprintf(e.stderr, "%s %s\n", time.Now().Format("2006-01-02T15:04:05.000"), fmt.Sprintf(f, a...))
	}
	// Before anything else: workspaces an earlier agent left running are walled at once.
	if err := wsnet.EnableWall(wall); err != nil {
		return fmt.Errorf("node: walling workspaces off this machine and private ranges: %w", err)
	}
	n := &node.Node{ControlURL: e.global.coord, AuthKey: *authKey, Hostname: *hostname,
		Dir: filepath.Join(*state, "mesh"), TUN: *tunName, Logf: quiet(logf)}
	defer n.Close()
	st, err := n.Up(ctx)
	if err != nil {
		return err
	}
	logf("node: on the mesh as %s %v", st.Self.DNSName, st.Self.TailscaleIPs)
	if err := wsnet.EnableNAT(*tunName); err != nil {
		return fmt.Errorf("node: workspace egress: %w", err)
	}
	if err := wsnet.EnableShield(); err != nil {
		return fmt.Errorf("node: ssh shield: %w", err)
	}
	if *tools == "" {
		if *tools, err = copySelf(filepath.Join(*state, "tools")); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	a := &node.Agent{Node: n, Logf: logf, SSHDir: filepath.Join(*state, "ssh"), Shield: shield, NewRuntime: func(machine string) (node.Runtime, error) {
		logf("node: running the workspaces coord wants on %s (containerd at %s)", machine, *sock)
		return &ctrd.Runtime{Address: *sock, Machine: machine, Identity: string(st.Self.ID), Dir: filepath.Join(*state, "workspaces"), Tools: *tools, Logf: logf}, nil
	}}
	return a.Run(ctx)
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

// quiet passes on the mesh node's log lines that matter to an operator, not tailscale's
// chatter.
func quiet(logf func(string, ...any)) func(string, ...any) {
	return func(f string, a ...any) {
		s := fmt.Sprintf(f, a...)
		if !strings.Contains(s, "[v") && (strings.Contains(s, "error") || strings.Contains(s, "health")) {
			logf("mesh: %s", s)
		}
	}
}

// copySelf puts a copy of this executable in dir as meshctl (workspaces run it for sftp) and
// returns dir. A copy, not a link: the binary may be replaced while workspaces mount it. An
// existing copy of the same size and no older is kept, so a restart costs a stat, not 60 MB.
func copySelf(dir string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dir, "meshctl")
	src, err := os.Stat(self)
	if err != nil {
		return "", err
	}
	if have, err := os.Stat(dst); err == nil && have.Size() == src.Size() && !have.ModTime().Before(src.ModTime()) {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return "", err
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return "", err
	}
	return dir, os.Rename(tmp, dst)
}
