package wsnet

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"meshwork.dev/overlay/ipam"
)

// WallTable is the nftables table (family inet) of the wall in the host namespace: what a
// workspace sends is judged on the host side of its veth, where root inside the workspace
// (whose CAP_NET_ADMIN reaches only its own namespace) cannot undo it.
const WallTable = "meshwork_wall"

// HostIfPrefix starts the host-side name of every workspace veth (Config.HostIf): the wall
// matches packets coming from workspaces by it, so a veth Setup makes is never outside it.
const HostIfPrefix = "mwv"

// Walled are the destinations a workspace may not reach except through the mesh TUN (where
// the mesh's policy applies) or by Wall.Allow: loopback, link-local (cloud metadata at
// 169.254.169.254 included), RFC 1918, CGNAT (the mesh's own range: mesh traffic leaves by the
// TUN), ULA (the cluster's /48 is inside), multicast and reserved ranges.
var Walled = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	ipam.CGNAT,
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::ffff:0:0/96"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// Wall says what workspaces on this machine may reach besides the internet and the mesh.
type Wall struct {
	// MeshIf is the mesh TUN's name: what a workspace sends into it is mesh traffic, which the
	// mesh's packet filter judges by policy.
	MeshIf string
	// Allow are walled ranges an admin opens to workspaces (a LAN database, say). They are
	// reached through the machine; the machine's own addresses stay walled.
	Allow []netip.Prefix
}

// Validate reports what is wrong with w, naming the field to fix.
func (w Wall) Validate() error {
	if w.MeshIf == "" || len(w.MeshIf) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("wsnet wall: mesh interface %q: give the mesh TUN's name (e.g. meshwork0)", w.MeshIf)
	}
	for _, p := range w.Allow {
		if !p.IsValid() || p != p.Masked() {
			return fmt.Errorf("wsnet wall: allowed range %v: give a network address with its length, e.g. 10.1.0.0/16", p)
		}
	}
	return nil
}

// EnableWall makes the wall's table anew, in one transaction, in the calling thread's
// namespace. Packets from a workspace veth whose source address does not route back through
// it (spoofed) are dropped. Packets from a workspace veth (HostIfPrefix) addressed to the machine itself (any
// of its addresses, the workspace's gateways included) are refused, but for answers to
// connections the machine opened and IPv6 neighbour discovery. Forwarded ones are refused when
// bound for a Walled range, unless they answer a connection made to the workspace, go into the
// mesh TUN or to another workspace here (as before the wall), or fall in w.Allow.
func EnableWall(w Wall) error {
	if err := w.Validate(); err != nil {
		return err
	}
	out, in := wallRules(w)
	return wallErr(applyTable(WallTable, func(c *nftables.Conn, t *nftables.Table) {
		for _, hook := range []struct {
			name  string
			hook  *nftables.ChainHook
			rules [][]expr.Any
		}{{"forward", nftables.ChainHookForward, out}, {"input", nftables.ChainHookInput, in}} {
			sub := c.AddChain(&nftables.Chain{Name: "workspace_" + hook.name, Table: t})
			for _, r := range hook.rules {
				c.AddRule(&nftables.Rule{Table: t, Chain: sub, Exprs: r})
			}
			base := c.AddChain(&nftables.Chain{Name: hook.name, Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: hook.hook, Priority: nftables.ChainPriorityFilter})
			c.AddRule(&nftables.Rule{Table: t, Chain: base, Exprs: append(ifPrefix(expr.MetaKeyIIFNAME, HostIfPrefix),
				&expr.Verdict{Kind: expr.VerdictJump, Chain: sub.Name})})
		}
	}))
}

// DisableWall removes EnableWall's table; absent is fine.
func DisableWall() error { return wallErr(applyTable(WallTable, nil)) }

func wallErr(err error) error {
	if err != nil {
		return fmt.Errorf("wsnet wall: table %s: %w", WallTable, err)
	}
	return nil
}

// applyTable deletes the named inet table and, with fill, makes it anew, in one transaction,
// in the calling thread's namespace.
func applyTable(name string, fill func(*nftables.Conn, *nftables.Table)) error {
	return withNft(func(c *nftables.Conn) error {
		t := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
		c.AddTable(t) // makes the delete below valid when the table is absent
		c.DelTable(t)
		if fill != nil {
			fill(c, c.AddTable(t))
		}
		return nil
	})
}

// wallRules are the rules of the workspace_forward chain (out) and the workspace_input
// chain (in), which see only packets coming from workspace veths.
func wallRules(w Wall) (out, in [][]expr.Any) {
	out = [][]expr.Any{
		append(spoofed(), drop()),
		append(ctReply(), accept()),
		append(ifName(expr.MetaKeyOIFNAME, w.MeshIf), accept()),
		append(ifPrefix(expr.MetaKeyOIFNAME, HostIfPrefix), accept()),
	}
	for _, p := range w.Allow {
		out = append(out, append(daddrIn(p), accept()))
	}
	for _, p := range Walled {
		out = append(out, append(daddrIn(p), refuse()))
	}
	in = [][]expr.Any{
		append(spoofed(), drop()),
		append(ctReply(), accept()),
		append(neighbourDiscovery(), accept()),
		{refuse()},
	}
	return out, in
}

// spoofed: fib saddr . iif oif missing (the source address does not route back through the
// veth it came in by: a workspace sending as another one, or as anything else).
func spoofed() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, ResultOIF: true, FlagSADDR: true, FlagIIF: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

// daddrIn: meta nfproto P; daddr in p.
func daddrIn(p netip.Prefix) []expr.Any {
	proto, off, l := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if p.Addr().Is6() {
		proto, off, l = unix.NFPROTO_IPV6, 24, 16
	}
	return append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}, inPrefix(off, l, p, expr.CmpOpEq)...)
}

// ctDirReply is IP_CT_DIR_REPLY, the direction of a connection's answers.
const ctDirReply = 1

// ctReply: ct direction reply (answers to a connection opened toward the workspace, and ICMP
// errors about one).
func ctReply() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{ctDirReply}},
	}
}

// neighbourDiscovery: icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } (so a workspace
// that flushed its neighbours still finds its IPv6 gateway).
func neighbourDiscovery() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{135}, ToData: []byte{136}},
	}
}

// ifName matches the input or output interface name exactly.
func ifName(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}}
}

// ifPrefix matches interface names starting with prefix (nft's iifname "mwv*").
func ifPrefix(key expr.MetaKey, prefix string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(prefix)}}
}

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }

func drop() expr.Any { return &expr.Verdict{Kind: expr.VerdictDrop} }

// refuse answers with an ICMP(v6) administratively-prohibited (a TCP client sees "connection
// refused" or "no route", not a hang).
func refuse() expr.Any {
	return &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}
}
