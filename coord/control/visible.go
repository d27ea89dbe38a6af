package control

import (
	"net/netip"
	"strings"

	"tailscale.com/tailcfg"

	"meshwork.dev/coord/fsm"
)

// visibility is what one node may learn of the others under a policy, as Tailscale trims
// its maps: the peers it may reach and those that may reach it, nothing else. The zero
// value (no policy) sees everyone.
type visibility struct {
	limited bool
	addrs   map[netip.Addr]bool // single addresses it reaches or is reached from
	nets    []netip.Prefix      // wider ranges of either
	all     bool                // a rule says "*" on the other side
}

// visibilityOf is the visibility of the node whose addresses (its own and its workspaces')
// are self, under the packet filter rules.
func visibilityOf(rules []tailcfg.FilterRule, self []netip.Prefix, limited bool) *visibility {
	v := &visibility{limited: limited, addrs: map[netip.Addr]bool{}}
	if !limited {
		return v
	}
	for _, r := range rules {
		dsts := make([]string, len(r.DstPorts))
		for i, d := range r.DstPorts {
			dsts[i] = d.IP
		}
		if matchesAny(r.SrcIPs, self) {
			v.add(dsts)
		}
		if matchesAny(dsts, self) {
			v.add(r.SrcIPs)
		}
	}
	return v
}

// add records the filter's address strings ("*", an IP, or a CIDR) as seen.
func (v *visibility) add(ips []string) {
	for _, s := range ips {
		switch p, err := parseFilterIP(s); {
		case s == "*":
			v.all = true
		case err != nil:
		case p.IsSingleIP():
			v.addrs[p.Addr()] = true
		default:
			v.nets = append(v.nets, p)
		}
	}
}

// sees reports whether a node with addresses addrs is visible.
func (v *visibility) sees(addrs []netip.Prefix) bool {
	if !v.limited || v.all {
		return true
	}
	for _, a := range addrs {
		if v.addrs[a.Addr()] {
			return true
		}
		for _, n := range v.nets {
			if n.Overlaps(a) {
				return true
			}
		}
	}
	return false
}

// matchesAny reports whether any of the filter's address strings covers one of addrs.
func matchesAny(ips []string, addrs []netip.Prefix) bool {
	for _, s := range ips {
		if s == "*" {
			return true
		}
		p, err := parseFilterIP(s)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if p.Overlaps(a) {
				return true
			}
		}
	}
	return false
}

func parseFilterIP(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// nodeAddrs are the addresses traffic for node n goes to: its own, its workspaces' and its
// environments' services'.
func nodeAddrs(store *fsm.Store, n *fsm.Node) []netip.Prefix {
	return append(hostPrefixes(n.IPv4, n.IPv6), routedBy(store, n)...)
}

// visibilityOf is what node self may see under the current policy and the packet filter rules.
func (s *Server) visibilityOf(store *fsm.Store, self *fsm.Node, rules []tailcfg.FilterRule) *visibility {
	pol := store.Policy()
	limited := pol.Version != 0 && pol.Text != ""
	return visibilityOf(rules, nodeAddrs(store, self), limited)
}
