package node

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/tailscale/wireguard-go/tun"
	"github.com/vishvananda/netlink"
	"tailscale.com/net/netmon"

	"meshwork.dev/overlay/ipam"
)

// tunMTU is the mesh interface's MTU: WireGuard's overhead under a 1500-byte path.
const tunMTU = 1280

// openTUN creates the kernel interface the node's packets flow through. It must exist
// before the node starts so tailscale treats it as its own and not as a route change.
func openTUN(name string) (tun.Device, error) {
	dev, err := tun.CreateTUN(name, tunMTU)
	if err != nil {
		return nil, fmt.Errorf("creating TUN %s (needs root): %w", name, err)
	}
	netmon.SetTailscaleInterfaceProps(name, 0)
	return dev, nil
}

// configureTUN gives the interface the node's mesh addresses and routes the mesh's ranges
// (100.64.0.0/10 and the cluster's ULA /48) through it.
func configureTUN(name string, addrs []netip.Addr) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		pfx := netip.PrefixFrom(a, a.BitLen())
		if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipnet(pfx)}); err != nil {
			return fmt.Errorf("address %v on %s: %w", pfx, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return err
	}
	routes := []netip.Prefix{ipam.CGNAT}
	for _, a := range addrs {
		if a.Is6() {
			routes = append(routes, netip.PrefixFrom(a, 48).Masked())
		}
	}
	for _, r := range routes {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipnet(r), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("route %v via %s: %w", r, name, err)
		}
	}
	return nil
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
