package wsnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ensureVeth returns the host end and the workspace end of c's veth pair, creating the pair
// when either end is missing or they are not each other's peer.
func ensureVeth(c Config, hnl, wnl *netlink.Handle, ws netns.NsHandle) (host, inside netlink.Link, err error) {
	host, inside = existingPair(c, hnl, wnl)
	if host != nil {
		return host, inside, nil
	}
	if l, err := hnl.LinkByName(c.HostIf); err == nil {
		if _, isVeth := l.(*netlink.Veth); !isVeth {
			return nil, nil, fmt.Errorf("host interface %s exists and is a %s, not a veth: pick another name", c.HostIf, l.Type())
		}
		if err := hnl.LinkDel(l); err != nil {
			return nil, nil, fmt.Errorf("delete stale %s: %w", c.HostIf, err)
		}
	}
	if l, err := wnl.LinkByName(InsideIf); err == nil {
		if err := wnl.LinkDel(l); err != nil {
			return nil, nil, fmt.Errorf("delete stale %s in %s: %w", InsideIf, c.Netns, err)
		}
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: c.HostIf},
		PeerName:      InsideIf,
		PeerNamespace: netlink.NsFd(ws),
	}
	if err := hnl.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("add veth %s: %w", c.HostIf, err)
	}
	if host, err = hnl.LinkByName(c.HostIf); err != nil {
		return nil, nil, fmt.Errorf("veth %s: %w", c.HostIf, err)
	}
	if inside, err = wnl.LinkByName(InsideIf); err != nil {
		return nil, nil, fmt.Errorf("veth peer %s in %s: %w", InsideIf, c.Netns, err)
	}
	return host, inside, nil
}

// existingPair returns both ends if the host end is a veth whose peer is eth0 in the namespace.
func existingPair(c Config, hnl, wnl *netlink.Handle) (host, inside netlink.Link) {
	h, err := hnl.LinkByName(c.HostIf)
	if err != nil {
		return nil, nil
	}
	in, err := wnl.LinkByName(InsideIf)
	if err != nil {
		return nil, nil
	}
	if _, isVeth := h.(*netlink.Veth); !isVeth || h.Attrs().ParentIndex != in.Attrs().Index {
		return nil, nil
	}
	return h, in
}

// configureInside brings lo and eth0 up, adds the workspace's addresses and its default routes
// via the host end, whose MAC is a permanent neighbour so that no ARP or NDP is needed.
func configureInside(c Config, nl *netlink.Handle, eth0 netlink.Link, hostMAC net.HardwareAddr) error {
	lo, err := nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	for _, l := range []netlink.Link{lo, eth0} {
		if err := nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("%s up: %w", l.Attrs().Name, err)
		}
	}
	idx := eth0.Attrs().Index
	for _, a := range c.addrs() {
		addr := &netlink.Addr{IPNet: ipNet(a), Flags: unix.IFA_F_NODAD}
		if err := nl.AddrReplace(eth0, addr); err != nil {
			return fmt.Errorf("address %v: %w", a, err)
		}
		gw := gatewayFor(a)
		if err := setNeigh(nl, idx, gw, hostMAC); err != nil {
			return err
		}
		if err := nl.RouteReplace(defaultRoute(idx, gw)); err != nil {
			return fmt.Errorf("default route via %v: %w", gw, err)
		}
	}
	return nil
}

// configureHost brings the host end up with the IPv6 gateway address on it and routes the
// workspace's addresses to it, with eth0's MAC as permanent neighbour.
func configureHost(c Config, nl *netlink.Handle, veth netlink.Link, wsMAC net.HardwareAddr) error {
	if err := nl.LinkSetUp(veth); err != nil {
		return fmt.Errorf("%s up: %w", c.HostIf, err)
	}
	idx := veth.Attrs().Index
	if c.IPv6.IsValid() {
		ll := &netlink.Addr{IPNet: &net.IPNet{IP: GatewayIPv6.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
		if err := nl.AddrReplace(veth, ll); err != nil {
			return fmt.Errorf("address %v on %s: %w", GatewayIPv6, c.HostIf, err)
		}
	}
	for _, a := range c.addrs() {
		if err := setNeigh(nl, idx, a, wsMAC); err != nil {
			return err
		}
		r := &netlink.Route{LinkIndex: idx, Dst: ipNet(a), Scope: netlink.SCOPE_LINK}
		if err := nl.RouteReplace(r); err != nil {
			return fmt.Errorf("route %v dev %s: %w", a, c.HostIf, err)
		}
	}
	return nil
}

// hostSysctls turns forwarding on, and proxy ARP on the host end so that the gateway still
// answers if the workspace flushes its neighbours (when the host has a route for it).
func hostSysctls(c Config, host netns.NsHandle) error {
	return inNS(host, func() error {
		if err := writeProc("net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
		if err := writeProc("net/ipv4/conf/"+c.HostIf+"/proxy_arp", "1"); err != nil {
			return err
		}
		if c.IPv6.IsValid() {
			return writeProc("net/ipv6/conf/all/forwarding", "1")
		}
		return nil
	})
}

func (c Config) addrs() []netip.Addr {
	if c.IPv6.IsValid() {
		return []netip.Addr{c.IPv4, c.IPv6}
	}
	return []netip.Addr{c.IPv4}
}

func gatewayFor(a netip.Addr) netip.Addr {
	if a.Is4() {
		return GatewayIPv4
	}
	return GatewayIPv6
}

func defaultRoute(idx int, gw netip.Addr) *netlink.Route {
	bits := 0
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(bits, 32)}
	if gw.Is6() {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(bits, 128)}
	}
	return &netlink.Route{LinkIndex: idx, Dst: dst, Gw: gw.AsSlice(), Flags: int(netlink.FLAG_ONLINK)}
}

func setNeigh(nl *netlink.Handle, idx int, ip netip.Addr, mac net.HardwareAddr) error {
	family := unix.AF_INET
	if ip.Is6() {
		family = unix.AF_INET6
	}
	n := &netlink.Neigh{LinkIndex: idx, Family: family, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: mac}
	if err := nl.NeighSet(n); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("neighbour %v: %w", ip, err)
	}
	return nil
}
