package lab

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// A Router is a host that joins a private LAN to an upstream network with NAT: hosts on the
// LAN reach upstream and are seen with the router's upstream address; nothing upstream can
// open a connection into the LAN.
type Router struct {
	*Host
	LAN      *Network
	Upstream *Network
}

// Router makes a NAT router called name on upstream, with a new LAN of its own (named
// "lan-" + name). Its default route points at the upstream network's first host, the
// internet host when upstream is the lab's internet.
func (l *Lab) Router(name string, upstream *Network) *Router {
	l.t.Helper()
	r := &Router{Host: l.Host(name), LAN: l.Network("lan-" + name), Upstream: upstream}
	r.Attach(upstream)
	r.Attach(r.LAN)
	r.DefaultRoute(upstream.hostAddr(1))
	r.SetSysctl("net/ipv4/ip_forward", "1")
	if err := r.installNAT(); err != nil {
		l.t.Fatalf("lab: router %s: nftables: %v", name, err)
	}
	return r
}

// LANHost makes a host on the router's LAN, routed through it.
func (r *Router) LANHost(name string) *Host {
	r.lab.t.Helper()
	h := r.lab.Host(name)
	h.Attach(r.LAN)
	h.DefaultRoute(r.Addr(r.LAN))
	return h
}

// installNAT writes the router's rules through netlink:
//
//	table ip lab-nat {
//		chain postrouting { type nat hook postrouting priority srcnat; oifname UP masquerade }
//		chain forward { type filter hook forward priority filter; policy drop;
//			ct state established,related accept; iifname LAN accept }
//	}
func (r *Router) installNAT() error {
	c, err := nftables.New(nftables.WithNetNSFd(int(r.h)))
	if err != nil {
		return err
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "lab-nat"})
	post := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: append(
		ifname(expr.MetaKeyOIFNAME, r.Upstream.name), &expr.Masq{})})
	drop := nftables.ChainPolicyDrop
	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: append(established(), accept())})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: append(
		ifname(expr.MetaKeyIIFNAME, r.LAN.name), accept())})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}

// ifname matches the input or output interface name.
func ifname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, 16)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

// established matches conntrack state established or related.
func established() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func accept() *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictAccept} }

// hostAddr is the address of host number i on n.
func (n *Network) hostAddr(i byte) netip.Addr {
	b := n.prefix.Addr().As4()
	b[3] = i
	return netip.AddrFrom4(b)
}
