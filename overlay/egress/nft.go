package egress

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"meshwork.dev/overlay/meshdns"
	"meshwork.dev/workspace/wsnet"
)

// Table is the nftables table (family inet) Pin puts in a pinned workspace's namespace.
const Table = "meshwork_egress"

// applyTable makes the fail-closed table anew in ns, in one transaction. Its output and
// forward chains drop (policy) every packet that leaves the workspace except by loopback,
// by the tunnel's TUN tunIf, or by eth0 to the mesh ranges; DNS to the mesh resolver is
// dropped too, since it would ask the workmachine's own upstream, outside the tunnel.
//
//	table inet meshwork_egress {
//		chain output { type filter hook output priority filter; policy drop;
//			oifname "lo" accept
//			oifname TUN accept
//			oifname "eth0" ip daddr 100.100.100.100 udp dport 53 drop   (and tcp)
//			oifname "eth0" ip daddr 100.64.0.0/10 accept
//			oifname "eth0" ip6 daddr fc00::/7 accept
//			oifname "eth0" icmpv6 type 133-136 accept }
//		chain forward { the same }
//	}
func applyTable(ns netns.NsHandle, tunIf string) error {
	err := withNft(ns, func(c *nftables.Conn) {
		t := deleteTable(c)
		t = c.AddTable(t)
		drop := nftables.ChainPolicyDrop
		for _, hook := range []*nftables.ChainHook{nftables.ChainHookOutput, nftables.ChainHookForward} {
			name := "output"
			if hook == nftables.ChainHookForward {
				name = "forward"
			}
			ch := c.AddChain(&nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: hook, Priority: nftables.ChainPriorityFilter, Policy: &drop})
			for _, r := range rules(tunIf) {
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
			}
		}
	})
	if err != nil {
		return fmt.Errorf("table %s: %w", Table, err)
	}
	return nil
}

// removeTable deletes the table from ns; absent is fine.
func removeTable(ns netns.NsHandle) error {
	if err := withNft(ns, func(c *nftables.Conn) { deleteTable(c) }); err != nil {
		return fmt.Errorf("remove table %s: %w", Table, err)
	}
	return nil
}

// deleteTable queues the table's deletion, valid also when it is absent.
func deleteTable(c *nftables.Conn) *nftables.Table {
	t := &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	return t
}

// rules are each chain's rules, in order; the chain's policy drops the rest.
func rules(tunIf string) [][]expr.Any {
	eth0 := ifName(expr.MetaKeyOIFNAME, wsnet.InsideIf)
	r := [][]expr.Any{
		append(ifName(expr.MetaKeyOIFNAME, "lo"), accept()),
		append(ifName(expr.MetaKeyOIFNAME, tunIf), accept()),
	}
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		m := join(eth0, daddrIn(netip.PrefixFrom(meshdns.Resolver, 32)), l4Dport(proto, 53))
		r = append(r, append(m, verdict(expr.VerdictDrop)))
	}
	for _, p := range []netip.Prefix{wsnet.MeshIPv4, wsnet.MeshIPv6} {
		r = append(r, append(join(eth0, daddrIn(p)), accept()))
	}
	return append(r, append(join(eth0, neighbourDiscovery()), accept()))
}

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ifName matches the input or output interface name exactly.
func ifName(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}}
}

// daddrIn: meta nfproto P; daddr in p.
func daddrIn(p netip.Prefix) []expr.Any {
	proto, off, l := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if p.Addr().Is6() {
		proto, off, l = unix.NFPROTO_IPV6, 24, 16
	}
	mask := make([]byte, l)
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: l, Mask: mask, Xor: make([]byte, l)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// l4Dport: meta l4proto proto; th dport port.
func l4Dport(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(port >> 8), byte(port)}},
	}
}

// neighbourDiscovery: icmpv6 type 133-136 (router and neighbour solicitations and adverts).
func neighbourDiscovery() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{133}, ToData: []byte{136}},
	}
}

func accept() expr.Any { return verdict(expr.VerdictAccept) }

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

// withNft runs f on an nftables connection in ns and flushes what it queued as one transaction.
func withNft(ns netns.NsHandle, f func(*nftables.Conn)) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer c.CloseLasting()
	f(c)
	return c.Flush()
}
