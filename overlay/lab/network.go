package lab

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
)

// A Network is an Ethernet segment: a bridge in a namespace of its own, with a /24 from the
// lab's range. Hosts join it with Attach.
type Network struct {
	name   string
	prefix netip.Prefix
	sw     *Host // the namespace holding the bridge
	br     netlink.Link
	next   byte // last host number handed out
}

// Network makes a new segment called name (at most 15 characters: hosts name their interface
// on it after it).
func (l *Lab) Network(name string) *Network {
	l.t.Helper()
	if len(name) == 0 || len(name) > 15 {
		l.t.Fatalf("lab: network name %q: want 1 to 15 characters (it names interfaces)", name)
	}
	sw := l.Host("sw-" + name)
	n := &Network{name: name, prefix: l.newSubnet(), sw: sw, next: 0}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := sw.nl.LinkAdd(br); err != nil {
		l.t.Fatalf("lab: network %s: bridge: %v", name, err)
	}
	if err := sw.nl.LinkSetUp(br); err != nil {
		l.t.Fatalf("lab: network %s: bridge up: %v", name, err)
	}
	n.br = br
	return n
}

// Name is the network's name.
func (n *Network) Name() string { return n.name }

// Prefix is the network's subnet.
func (n *Network) Prefix() netip.Prefix { return n.prefix }

// allocate returns the next host address on n.
func (n *Network) allocate() (netip.Addr, error) {
	if n.next >= 250 {
		return netip.Addr{}, fmt.Errorf("network %s is full", n.name)
	}
	n.next++
	return n.hostAddr(n.next), nil
}

// Attach plugs h into n with a veth pair and gives it the next address on n. Inside h the
// interface is named after the network.
func (h *Host) Attach(n *Network) netip.Addr {
	h.lab.t.Helper()
	addr, err := h.attach(n)
	if err != nil {
		h.lab.t.Fatalf("lab: attach %s to %s: %v", h.name, n.name, err)
	}
	return addr
}

func (h *Host) attach(n *Network) (netip.Addr, error) {
	h.lab.mu.Lock()
	addr, err := n.allocate()
	h.lab.mu.Unlock()
	if err != nil {
		return addr, err
	}
	port := fmt.Sprintf("p%d", addr.As4()[3])
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: port, MasterIndex: n.br.Attrs().Index},
		PeerName:      n.name,
		PeerNamespace: netlink.NsFd(h.h),
	}
	if err := n.sw.nl.LinkAdd(veth); err != nil {
		return addr, fmt.Errorf("veth: %w", err)
	}
	if err := n.sw.nl.LinkSetUp(veth); err != nil {
		return addr, fmt.Errorf("switch port up: %w", err)
	}
	link, err := h.nl.LinkByName(n.name)
	if err != nil {
		return addr, fmt.Errorf("find %s: %w", n.name, err)
	}
	a := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(addr, n.prefix.Bits()))}
	if err := h.nl.AddrAdd(link, a); err != nil {
		return addr, fmt.Errorf("address %v: %w", addr, err)
	}
	if err := h.nl.LinkSetUp(link); err != nil {
		return addr, fmt.Errorf("link up: %w", err)
	}
	h.mu.Lock()
	h.addrs[n] = addr
	h.mu.Unlock()
	return addr, nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func writeFile(path, value string) error {
	return os.WriteFile(path, []byte(value), 0o644)
}
