// Package wsnet gives a workspace its own Linux network namespace, joined to the machine's
// namespace by a veth pair that carries the workspace's mesh addresses.
package wsnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bind-mounted, as by `ip netns add`.
const NetnsDir = "/var/run/netns"

// InsideIf is the workspace's end of the veth, inside its namespace.
const InsideIf = "eth0"

// Gateways the workspace routes through. Both sit on the host's end of the veth: the IPv4
// one only as a static neighbour entry inside the workspace (the host holds no address), the
// IPv6 one as a link-local address.
var (
	GatewayIPv4 = netip.MustParseAddr("169.254.1.1")
	GatewayIPv6 = netip.MustParseAddr("fe80::1")
)

// Config names a workspace's namespace and veth and gives its addresses.
type Config struct {
	Netns  string     // named netns (NetnsDir/<Netns>), unique on the machine, e.g. "mw-" + short id
	HostIf string     // host-side veth name: HostIfPrefix and at most 15 bytes, unique in the host namespace
	IPv4   netip.Addr // the workspace's mesh IPv4 (required)
	IPv6   netip.Addr // optional
}

// Validate reports what is wrong with c, naming the field to fix.
func (c Config) Validate() error {
	switch {
	case c.Netns == "" || filepath.Base(c.Netns) != c.Netns || c.Netns == "." || c.Netns == "..":
		return fmt.Errorf("wsnet: netns name %q: give a plain file name such as mw-1a2b3c", c.Netns)
	case !strings.HasPrefix(c.HostIf, HostIfPrefix) || len(c.HostIf) > unix.IFNAMSIZ-1:
		return fmt.Errorf("wsnet: host interface %q: give a name of at most 15 bytes starting with %q (the wall knows workspaces by it)", c.HostIf, HostIfPrefix)
	case !c.IPv4.Is4():
		return fmt.Errorf("wsnet: IPv4 %v: the workspace needs an IPv4 address", c.IPv4)
	case c.IPv6.IsValid() && !c.IPv6.Is6():
		return fmt.Errorf("wsnet: IPv6 %v is not an IPv6 address", c.IPv6)
	}
	return nil
}

// NsPath is the path of c's namespace, as an OCI runtime spec takes it.
func (c Config) NsPath() string { return filepath.Join(NetnsDir, c.Netns) }

// Setup makes c's namespace and veth, or repairs them: the namespace with lo up and eth0 holding
// IPv4/32 (and IPv6/128), default routes via the host end; in the host namespace (the calling
// thread's) /32 and /128 routes to the veth and forwarding on. Running it again is harmless,
// also while a container uses the namespace.
func Setup(c Config) (nsPath string, err error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	host, err := currentNS()
	if err != nil {
		return "", fmt.Errorf("wsnet setup %s: %w", c.Netns, err)
	}
	defer host.Close()
	if err := setup(c, host); err != nil {
		return "", fmt.Errorf("wsnet setup %s: %w", c.Netns, err)
	}
	return c.NsPath(), nil
}

func setup(c Config, host netns.NsHandle) error {
	ws, err := ensureNetns(c.Netns)
	if err != nil {
		return err
	}
	defer ws.Close()
	hnl, err := netlink.NewHandleAt(host)
	if err != nil {
		return fmt.Errorf("netlink in host namespace: %w", err)
	}
	defer hnl.Close()
	wnl, err := netlink.NewHandleAt(ws)
	if err != nil {
		return fmt.Errorf("netlink in workspace namespace: %w", err)
	}
	defer wnl.Close()
	hostLink, wsLink, err := ensureVeth(c, hnl, wnl, ws)
	if err != nil {
		return err
	}
	if err := configureInside(c, wnl, wsLink, hostLink.Attrs().HardwareAddr); err != nil {
		return fmt.Errorf("inside: %w", err)
	}
	if err := configureHost(c, hnl, hostLink, wsLink.Attrs().HardwareAddr); err != nil {
		return fmt.Errorf("host side: %w", err)
	}
	return hostSysctls(c, host)
}

// Teardown removes c's veth (with its routes and neighbours) and namespace. What is already
// gone is no error.
func Teardown(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	host, err := currentNS()
	if err != nil {
		return fmt.Errorf("wsnet teardown %s: %w", c.Netns, err)
	}
	defer host.Close()
	hnl, err := netlink.NewHandleAt(host)
	if err != nil {
		return fmt.Errorf("wsnet teardown %s: netlink: %w", c.Netns, err)
	}
	defer hnl.Close()
	if l, err := hnl.LinkByName(c.HostIf); err == nil {
		if _, isVeth := l.(*netlink.Veth); isVeth {
			if err := hnl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				return fmt.Errorf("wsnet teardown %s: delete %s: %w", c.Netns, c.HostIf, err)
			}
		}
	}
	if err := removeNetns(c.Netns); err != nil {
		return fmt.Errorf("wsnet teardown %s: %w", c.Netns, err)
	}
	return nil
}

// Exists reports whether c's namespace exists.
func Exists(c Config) bool {
	_, err := os.Stat(c.NsPath())
	return err == nil
}

func ipNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}
