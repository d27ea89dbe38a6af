package wsnet

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"meshwork.dev/overlay/ipam"
)

// NATTable is the nftables table (family inet) EnableNAT owns in the host namespace.
const NATTable = "meshwork_wsnat"

// Mesh ranges: traffic from a workspace address to a mesh address is never NATed.
var (
	MeshIPv4 = ipam.CGNAT
	MeshIPv6 = netip.MustParsePrefix("fc00::/7") // the cluster's ULA /48 lies inside
)

// EnableNAT masquerades traffic from workspace addresses (MeshIPv4, MeshIPv6) to non-mesh
// destinations that leaves the host namespace by any interface other than meshIf, and turns
// IPv4 forwarding on. It replaces the table atomically, so calling it again (even with another
// meshIf) is fine.
func EnableNAT(meshIf string) error {
	if meshIf == "" || len(meshIf) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("wsnet nat: mesh interface %q: give the mesh TUN's name (e.g. meshwork0)", meshIf)
	}
	host, err := currentNS()
	if err != nil {
		return fmt.Errorf("wsnet nat: %w", err)
	}
	defer host.Close()
	if err := writeSysctl(host, "net/ipv4/ip_forward", "1"); err != nil {
		return fmt.Errorf("wsnet nat: %w", err)
	}
	return applyNAT(func(c *nftables.Conn, t *nftables.Table) {
		ch := c.AddChain(&nftables.Chain{
			Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
		})
		for _, p := range []netip.Prefix{MeshIPv4, MeshIPv6} {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: masqueradeRule(meshIf, p)})
		}
	})
}

// DisableNAT removes EnableNAT's table; absent is fine. Forwarding stays on (workspaces need it).
func DisableNAT() error { return applyNAT(nil) }

// applyNAT deletes the table and, with fill, makes it anew, in one transaction, in the
// calling thread's namespace.
func applyNAT(fill func(*nftables.Conn, *nftables.Table)) error {
	if err := applyTable(NATTable, fill); err != nil {
		return fmt.Errorf("wsnet nat: table %s: %w", NATTable, err)
	}
	return nil
}

// masqueradeRule: meta nfproto P; saddr in p; daddr not in p; oifname != meshIf; masquerade.
func masqueradeRule(meshIf string, p netip.Prefix) []expr.Any {
	proto, off, l := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if p.Addr().Is6() {
		proto, off, l = unix.NFPROTO_IPV6, 8, 16
	}
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, meshIf)
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	exprs = append(exprs, inPrefix(off, l, p, expr.CmpOpEq)...)
	exprs = append(exprs, inPrefix(off+l, l, p, expr.CmpOpNeq)...)
	return append(exprs,
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname},
		&expr.Masq{},
	)
}

// inPrefix matches (op Eq) or excludes (op Neq) the network-header address at off against p.
func inPrefix(off, l uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	mask := make([]byte, l)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: l, Mask: mask, Xor: make([]byte, l)},
		&expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}
