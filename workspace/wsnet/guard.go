package wsnet

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// GuardTable is the nftables table (family inet) inside an environment service's own network
// namespace: the depth behind the machine's packet filter. It judges only what comes in.
const GuardTable = "meshwork_guard"

// Guard makes the guard table anew, in one transaction, in the named namespace (NetnsDir/name):
// loopback, established and related packets, IPv6 neighbour discovery and packets from allow
// are accepted; every other packet in (a new TCP or UDP connection, an ICMP echo), IPv4 or
// IPv6, is dropped. Call it again to change allow live: open connections stay.
func Guard(name string, allow []netip.Prefix) error {
	for _, p := range allow {
		if !p.IsValid() {
			return fmt.Errorf("wsnet guard %s: allowed range %v: give an address with its length, e.g. 100.64.0.7/32", name, p)
		}
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("wsnet guard %s: open namespace: %w", name, err)
	}
	defer ns.Close()
	err = withNftAt(ns, func(c *nftables.Conn) error {
		t := &nftables.Table{Name: GuardTable, Family: nftables.TableFamilyINet}
		c.AddTable(t) // makes the delete below valid when the table is absent
		c.DelTable(t)
		t = c.AddTable(t)
		ch := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
		for _, r := range guardRules(allow) {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("wsnet guard %s: table %s: %w", name, GuardTable, err)
	}
	return nil
}

// guardRules are the input chain's rules, in order, the last one dropping.
func guardRules(allow []netip.Prefix) [][]expr.Any {
	rules := [][]expr.Any{
		append(ifName(expr.MetaKeyIIFNAME, "lo"), accept()),
		append(ctEstablished(), accept()),
		append(neighbourDiscovery(), accept()),
	}
	for _, p := range allow {
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		rules = append(rules, append(saddrIn(p.Masked()), accept()))
	}
	return append(rules, []expr.Any{drop()})
}

// ctEstablished: ct state established,related.
func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// saddrIn: meta nfproto P; saddr in p.
func saddrIn(p netip.Prefix) []expr.Any {
	proto, off, l := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if p.Addr().Is6() {
		proto, off, l = unix.NFPROTO_IPV6, 8, 16
	}
	return append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}, inPrefix(off, l, p, expr.CmpOpEq)...)
}
