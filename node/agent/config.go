package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"meshwork.dev/node/sshd"
	"meshwork.dev/workspace/ctrd"
)

// Config is what a workmachine agent needs. Start from DefaultConfig; Coord is required.
type Config struct {
	// Coord is coord's address (http://host:port); several, comma-separated, name replicas
	// of one cluster. Required.
	Coord string
	// AuthKey admits the machine the first time (meshctl authkey create --tag
	// tag:workmachine); later starts reuse the identity kept in State.
	AuthKey string
	// State is the state directory: the machine's mesh identity (State/mesh), SSH host keys
	// and recordings (State/ssh), workspace files (State/workspaces). Default
	// /var/lib/meshwork/node.
	State string
	// Hostname is the machine's name on the mesh; empty: its host name.
	Hostname string
	// Containerd is containerd's socket; default ctrd.DefaultAddress.
	Containerd string
	// TUN names the kernel TUN that carries the mesh; default meshwork0.
	TUN string
	// AllowLAN are ranges workspaces may reach through this machine although they are walled
	// off (link-local, RFC 1918, CGNAT, ULA); the machine itself stays walled. Default none.
	AllowLAN []netip.Prefix
	// Tools is a directory mounted read-only at /.meshwork in workspaces, with a static
	// meshctl for their sftp subsystem. Empty: this executable, copied to State/tools.
	Tools string
	// Shield says when repeated failed SSH logins from an address get it blocked (nftables
	// then drops its SSH to every workspace here). Default: 5 failures within a minute block
	// for 10 minutes; MaxFailures -1 never blocks.
	Shield sshd.ShieldConfig
	// PullTimeout bounds how long a workspace's image pull may wait on a registry that does
	// not answer (an unresolvable or unreachable host) before the workspace fails; default 15 s.
	PullTimeout time.Duration
	// Resync is how often a workspace is checked again when nothing changed; default 10 s.
	Resync time.Duration
	// Logf receives the agent's log lines; nil discards them.
	Logf func(format string, args ...any)
}

// DefaultConfig returns a Config with every default filled in, Coord and AuthKey empty.
func DefaultConfig() Config {
	return Config{
		State:       "/var/lib/meshwork/node",
		Containerd:  ctrd.DefaultAddress,
		TUN:         "meshwork0",
		Shield:      sshd.ShieldConfig{MaxFailures: 5, Window: time.Minute, BlockFor: 10 * time.Minute},
		PullTimeout: 15 * time.Second,
		Resync:      10 * time.Second,
	}
}

// Validate says what is missing or wrong in c, naming the setting and the fix.
func (c Config) Validate() error {
	var errs []error
	if c.Coord == "" {
		errs = append(errs, errors.New("no coord address: give Coord (meshctl node --coord URL)"))
	}
	if c.State == "" {
		errs = append(errs, errors.New("no state directory: give State (meshctl node --state DIR)"))
	}
	if c.TUN == "" {
		errs = append(errs, errors.New("no TUN name: give TUN (meshctl node --tun NAME)"))
	}
	if c.Containerd == "" {
		errs = append(errs, errors.New("no containerd socket: give Containerd (meshctl node --containerd SOCK)"))
	}
	if c.PullTimeout <= 0 {
		errs = append(errs, fmt.Errorf("pull timeout %v: give a positive duration, e.g. 15s", c.PullTimeout))
	}
	if c.Resync <= 0 {
		errs = append(errs, fmt.Errorf("resync %v: give a positive duration, e.g. 10s", c.Resync))
	}
	for _, p := range c.AllowLAN {
		if p != p.Masked() {
			errs = append(errs, fmt.Errorf("allowed range %v has host bits set: did you mean %v?", p, p.Masked()))
		}
	}
	return errors.Join(errs...)
}

func (c Config) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}
