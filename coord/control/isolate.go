package control

import (
	"net/netip"

	"go4.org/netipx"
	"tailscale.com/tailcfg"

	"meshwork.dev/coord/fsm"
)

// isolate walls off environments' services in the packet filter rules: a "*" destination
// becomes every address but the services', and each environment gets one rule letting its
// own services and allow(e) reach its services on every port. Rules are not changed in
// place (policy.AllowAll is shared).
func isolate(rules []tailcfg.FilterRule, envs []*fsm.Environment, allow func(*fsm.Environment) []netip.Addr) []tailcfg.FilterRule {
	var services []netip.Addr
	for _, e := range envs {
		services = append(services, serviceAddrs(e)...)
	}
	if len(services) == 0 {
		return rules
	}
	others := complement(services)
	out := make([]tailcfg.FilterRule, 0, len(rules)+len(envs))
	for _, r := range rules {
		out = append(out, narrowed(r, others))
	}
	for _, e := range envs {
		if r, ok := environmentRule(e, allow(e)); ok {
			out = append(out, r)
		}
	}
	return out
}

// complement is every IPv4 and IPv6 address but addrs, as prefixes.
func complement(addrs []netip.Addr) []netip.Prefix {
	var b netipx.IPSetBuilder
	b.AddPrefix(netip.PrefixFrom(netip.IPv4Unspecified(), 0))
	b.AddPrefix(netip.PrefixFrom(netip.IPv6Unspecified(), 0))
	for _, a := range addrs {
		b.Remove(a)
	}
	set, _ := b.IPSet() // only ever errors for invalid input, which ParseAddr never gives
	return set.Prefixes()
}

// narrowed is r with each "*" destination replaced by the prefixes others, on its ports.
func narrowed(r tailcfg.FilterRule, others []netip.Prefix) tailcfg.FilterRule {
	dsts := make([]tailcfg.NetPortRange, 0, len(r.DstPorts))
	for _, d := range r.DstPorts {
		if d.IP != "*" {
			dsts = append(dsts, d)
			continue
		}
		for _, p := range others {
			dsts = append(dsts, tailcfg.NetPortRange{IP: p.String(), Ports: d.Ports})
		}
	}
	r.DstPorts = dsts
	return r
}

// environmentRule lets environment e's services and the addresses allow reach e's services
// on every port; ok is false when e has no service with an address.
func environmentRule(e *fsm.Environment, allow []netip.Addr) (r tailcfg.FilterRule, ok bool) {
	svcs := serviceAddrs(e)
	if len(svcs) == 0 {
		return r, false
	}
	for _, a := range append(svcs, allow...) {
		r.SrcIPs = append(r.SrcIPs, a.String())
	}
	for _, a := range svcs {
		r.DstPorts = append(r.DstPorts, tailcfg.NetPortRange{IP: a.String(), Ports: tailcfg.PortRangeAny})
	}
	return r, true
}
