// Package agent is the workmachine agent: it walls this machine's workspaces off, joins the
// mesh on a kernel TUN, and runs the workspaces coord wants here, serving SSH into them and
// their logs. Each kind of thing it keeps as coord wants it is a reconciler of its own (today
// the workspaces; environments, intercepts and egress to come).
package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"meshwork.dev/node"
	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/wsnet"
)

// Run sets the machine up (the wall, the mesh, egress NAT, the SSH shield) and runs the
// workspaces coord wants here until ctx ends. The workspaces outlive it: a restarted agent
// adopts them.
func Run(ctx context.Context, c Config) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	wall := wsnet.Wall{MeshIf: c.TUN, Allow: c.AllowLAN}
	// Before anything else: workspaces an earlier agent left running are walled at once.
	if err := wsnet.EnableWall(wall); err != nil {
		return fmt.Errorf("node: walling workspaces off this machine and private ranges: %w", err)
	}
	n := &node.Node{ControlURL: c.Coord, AuthKey: c.AuthKey, Hostname: c.Hostname,
		Dir: filepath.Join(c.State, "mesh"), TUN: c.TUN, Logf: quiet(c.logf)}
	defer n.Close()
	st, err := n.Up(ctx)
	if err != nil {
		return err
	}
	c.logf("node: on the mesh as %s %v", st.Self.DNSName, st.Self.TailscaleIPs)
	if err := wsnet.EnableNAT(c.TUN); err != nil {
		return fmt.Errorf("node: workspace egress: %w", err)
	}
	if err := wsnet.EnableShield(); err != nil {
		return fmt.Errorf("node: ssh shield: %w", err)
	}
	if c.Tools == "" {
		if c.Tools, err = copySelf(filepath.Join(c.State, "tools")); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	// The node's stable ID in coord keys its containers: another agent sharing this
	// containerd (another cluster, another lab) with the same machine name leaves them alone.
	id := string(st.Self.ID)
	runtime := func(machine string) (Runtime, error) { return c.runtime(machine, id) }
	a := &agent{Config: c, node: n, sshDir: filepath.Join(c.State, "ssh"), newRuntime: runtime}
	return a.follow(ctx)
}

// runtime is the containerd runtime for the machine's workspaces, once its name is known;
// identity is the node's stable ID.
func (c Config) runtime(machine, identity string) (Runtime, error) {
	c.logf("node: running the workspaces coord wants on %s (containerd at %s)", machine, c.Containerd)
	return &ctrd.Runtime{Address: c.Containerd, Machine: machine, Identity: identity, Dir: filepath.Join(c.State, "workspaces"),
		Tools: c.Tools, PullTimeout: c.PullTimeout, Logf: c.Logf}, nil
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
