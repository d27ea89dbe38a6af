package ctl

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"meshwork.dev/node"
)

var daemonCmd = &command{
	name:    "daemon",
	summary: "Run the laptop daemon that keeps this machine on the mesh (meshctl up starts it)",
	usage:   "[--state DIR] [--socket PATH] [--userspace] [--tun NAME] [--socks5 ADDR] [--dns=false]",
	examples: []string{
		"meshctl daemon --state /var/lib/meshwork/daemon",
		"meshctl daemon --state ~/.local/state/meshwork --socket /tmp/meshctl.sock",
		"meshctl daemon --userspace --socks5 127.0.0.1:1080   # then curl --socks5-hostname 127.0.0.1:1080 http://peer:8080",
	},
	run: runDaemon,
}

// defaultState is where the daemon keeps its identity: the system's when root, the user's
// otherwise.
func defaultState() string {
	if os.Geteuid() == 0 {
		return "/var/lib/meshwork/daemon"
	}
	if d, err := os.UserHomeDir(); err == nil {
		return filepath.Join(d, ".local", "state", "meshwork")
	}
	return filepath.Join(os.TempDir(), "meshwork")
}

// daemonModeFlags adds the flags for what the daemon serves the machine beside the mesh
// (meshctl up passes them on to a daemon it starts).
func daemonModeFlags(fs *flag.FlagSet) (socks5 *string, dns *bool) {
	socks5 = fs.String("socks5", "127.0.0.1:1055", "userspace mode: loopback `addr`ess of a SOCKS5 proxy into the mesh (\"\" for none)")
	dns = fs.Bool("dns", true, "kernel TUN mode: point the machine's resolver (/etc/resolv.conf) at MagicDNS while up")
	return socks5, dns
}

func runDaemon(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	state := fs.String("state", defaultState(), "state `dir`ectory: the machine's mesh identity (one daemon per directory)")
	socket := fs.String("socket", os.Getenv("MESHCTL_SOCKET"), "local API `path` (default STATE/meshctl.sock; env MESHCTL_SOCKET)")
	userspace := fs.Bool("userspace", os.Geteuid() != 0, "userspace networking inside the daemon instead of a kernel TUN (default when not root)")
	tunName := fs.String("tun", "meshwork0", "`name` of the kernel TUN interface")
	socks5, dns := daemonModeFlags(fs)
	if err := e.args(fs, args, 0); err != nil {
		return err
	}
	if *userspace {
		*tunName = ""
	}
	logf := func(f string, a ...any) {
		fmt.Fprintf(e.stderr, "%s %s\n", time.Now().Format("2006-01-02T15:04:05.000"), fmt.Sprintf(f, a...))
	}
	d := &node.Daemon{StateDir: *state, Socket: *socket, TUN: *tunName, SOCKS5: *socks5, DNS: *dns, Logf: logf}
	return d.Run(ctx)
}
