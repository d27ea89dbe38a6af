package egress

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"meshwork.dev/workspace/wsnet"
)

// configure brings the TUN up inside the workspace with the spec's addresses (dropping those
// of old that are no longer wanted, after the new ones are in: the kernel flushes a link's
// routes with its last address), its MTU, and the pinned routes.
func (t *Tunnel) configure(old []netip.Prefix) error {
	nl, err := netlink.NewHandleAt(t.ws)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", t.c.Netns, err)
	}
	defer nl.Close()
	link, err := nl.LinkByName(t.name)
	if err != nil {
		return fmt.Errorf("TUN %s in %s: %w", t.name, t.c.Netns, err)
	}
	for _, p := range t.spec.Addresses {
		if err := nl.AddrReplace(link, &netlink.Addr{IPNet: prefixNet(p), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("tunnel address %v: %w", p, err)
		}
	}
	for _, p := range old {
		if !slices.Contains(t.spec.Addresses, p) {
			if err := nl.AddrDel(link, &netlink.Addr{IPNet: prefixNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("old tunnel address %v: %w", p, err)
			}
		}
	}
	if err := nl.LinkSetMTU(link, t.spec.mtu()); err != nil {
		return fmt.Errorf("TUN MTU %d: %w", t.spec.mtu(), err)
	}
	if err := nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("TUN %s up: %w", t.name, err)
	}
	return pinRoutes(nl, t.c, link.Attrs().Index, t.spec.has(true))
}

// pinRoutes routes the mesh ranges via eth0's gateways and everything else into the TUN; IPv6
// is unreachable when the tunnel has no IPv6 address (programs fall back to IPv4 at once).
func pinRoutes(nl *netlink.Handle, c wsnet.Config, tunIdx int, tunV6 bool) error {
	eth0, err := nl.LinkByName(wsnet.InsideIf)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", wsnet.InsideIf, c.Netns, err)
	}
	idx := eth0.Attrs().Index
	routes := []*netlink.Route{
		viaGateway(idx, wsnet.MeshIPv4, wsnet.GatewayIPv4),
		{LinkIndex: tunIdx, Dst: prefixNet(allV4), Scope: netlink.SCOPE_LINK},
		{LinkIndex: tunIdx, Dst: prefixNet(allV6)},
	}
	if !tunV6 {
		routes[2] = &netlink.Route{Dst: prefixNet(allV6), Type: unix.RTN_UNREACHABLE}
	}
	if c.IPv6.IsValid() {
		routes = append(routes, viaGateway(idx, wsnet.MeshIPv6, wsnet.GatewayIPv6))
	}
	for _, r := range routes {
		if err := nl.RouteReplace(r); err != nil {
			return fmt.Errorf("route %v: %w", r.Dst, err)
		}
	}
	return nil
}

// unpin gives the workspace back its routes of wsnet.Setup (default via eth0), removes the
// mesh routes Pin added and then the fail-closed table.
func unpin(ws netns.NsHandle, c wsnet.Config) error {
	nl, err := netlink.NewHandleAt(ws)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", c.Netns, err)
	}
	defer nl.Close()
	eth0, err := nl.LinkByName(wsnet.InsideIf)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", wsnet.InsideIf, c.Netns, err)
	}
	idx := eth0.Attrs().Index
	if err := nl.RouteReplace(viaGateway(idx, allV4, wsnet.GatewayIPv4)); err != nil {
		return fmt.Errorf("default route via %s: %w", wsnet.InsideIf, err)
	}
	del := []*netlink.Route{viaGateway(idx, wsnet.MeshIPv4, wsnet.GatewayIPv4)}
	if c.IPv6.IsValid() {
		if err := nl.RouteReplace(viaGateway(idx, allV6, wsnet.GatewayIPv6)); err != nil {
			return fmt.Errorf("IPv6 default route via %s: %w", wsnet.InsideIf, err)
		}
		del = append(del, viaGateway(idx, wsnet.MeshIPv6, wsnet.GatewayIPv6))
	} else {
		del = append(del, &netlink.Route{Dst: prefixNet(allV6), Type: unix.RTN_UNREACHABLE})
	}
	for _, r := range del {
		if err := nl.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove route %v: %w", r.Dst, err)
		}
	}
	return removeTable(ws)
}

var (
	allV4 = netip.MustParsePrefix("0.0.0.0/0")
	allV6 = netip.MustParsePrefix("::/0")
)

func viaGateway(idx int, dst netip.Prefix, gw netip.Addr) *netlink.Route {
	return &netlink.Route{LinkIndex: idx, Dst: prefixNet(dst), Gw: gw.AsSlice(), Flags: int(netlink.FLAG_ONLINK)}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
