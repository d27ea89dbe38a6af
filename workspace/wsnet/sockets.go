package wsnet

import (
	"context"
	"fmt"
	"net"

	"github.com/vishvananda/netns"
)

// Listen opens a listening socket inside the workspace's network namespace, so connections
// to the workspace's own addresses reach a server running in this process (the agent's SSH
// server, a -R forward). A socket keeps the namespace it was made in.
func Listen(c Config, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inWorkspace(c, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s in workspace netns %s: %w", addr, c.Netns, err)
	}
	return ln, nil
}

// Dial connects from inside the workspace's network namespace, as a process in the
// workspace would (an SSH -L forward to localhost:3000 reaches the workspace's own port).
func Dial(ctx context.Context, c Config, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := inWorkspace(c, func() (err error) {
		conn, err = new(net.Dialer).DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s in workspace netns %s: %w", addr, c.Netns, err)
	}
	return conn, nil
}

func inWorkspace(c Config, f func() error) error {
	ns, err := netns.GetFromName(c.Netns)
	if err != nil {
		return fmt.Errorf("no network namespace %s: is the workspace running? %w", c.Netns, err)
	}
	defer ns.Close()
	return inNS(ns, f)
}
