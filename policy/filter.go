package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"tailscale.com/tailcfg"
)

// Host is a machine on the mesh as the policy sees it.
type Host struct {
	Name string // its mesh name
	User string // its owner's name
	Tags []string
	IPs  []netip.Addr
}

// AllowAll is the filter without a policy: every node reaches every port of every node.
var AllowAll = []tailcfg.FilterRule{{
	SrcIPs:   []string{"*"},
	DstPorts: []tailcfg.NetPortRange{{IP: "*", Ports: tailcfg.PortRangeAny}},
}}

// Filter compiles the acls into the packet filter every node enforces on what it receives:
// everything not accepted by a rule is dropped.
func (p *Policy) Filter(hosts []Host) ([]tailcfg.FilterRule, error) {
	var rules []tailcfg.FilterRule
	for i, a := range p.ACLs {
		var r tailcfg.FilterRule
		for _, s := range a.Src {
			r.SrcIPs = append(r.SrcIPs, p.resolve(s, hosts)...)
		}
		for _, d := range a.Dst {
			host, ports, err := splitDst(d)
			if err != nil {
				return nil, fmt.Errorf("policy: acls[%d]: %w", i, err)
			}
			for _, ip := range p.resolve(host, hosts) {
				for _, pr := range ports {
					r.DstPorts = append(r.DstPorts, tailcfg.NetPortRange{IP: ip, Ports: pr})
				}
			}
		}
		if len(r.SrcIPs) > 0 && len(r.DstPorts) > 0 {
			rules = append(rules, r)
		}
	}
	return rules, nil
}

// resolve turns a policy name into addresses: "*", an IP or CIDR, a tag, a group, a user
// or a host's mesh name.
func (p *Policy) resolve(name string, hosts []Host) []string {
	switch {
	case name == "*":
		return []string{"*"}
	case strings.Contains(name, "/"):
		if _, err := netip.ParsePrefix(name); err == nil {
			return []string{name}
		}
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		return []string{ip.String()}
	}
	var out []string
	for _, h := range hosts {
		if p.matches(name, h) {
			for _, ip := range h.IPs {
				out = append(out, ip.String())
			}
		}
	}
	return out
}

func (p *Policy) matches(name string, h Host) bool {
	switch {
	case strings.HasPrefix(name, "tag:"):
		return slices.Contains(h.Tags, name)
	case strings.HasPrefix(name, "group:"):
		return len(h.Tags) == 0 && slices.Contains(p.Groups[name], h.User)
	default:
		// A user's machines are the untagged ones they own (tagged machines belong to their tags).
		return name == h.Name || len(h.Tags) == 0 && name == h.User
	}
}

// splitDst splits "host:ports" (host may itself hold a colon: tag:web:443) into the host
// and its port ranges: "*", "22", "80,443", "8000-8999".
func splitDst(d string) (string, []tailcfg.PortRange, error) {
	i := strings.LastIndex(d, ":")
	if i < 0 {
		return "", nil, fmt.Errorf("dst %q: write HOST:PORTS", d)
	}
	host, spec := d[:i], d[i+1:]
	if spec == "*" {
		return host, []tailcfg.PortRange{tailcfg.PortRangeAny}, nil
	}
	var out []tailcfg.PortRange
	for _, part := range strings.Split(spec, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			hi = lo
		}
		first, err1 := strconv.ParseUint(lo, 10, 16)
		last, err2 := strconv.ParseUint(hi, 10, 16)
		if err1 != nil || err2 != nil || first > last {
			return "", nil, fmt.Errorf("dst %q: ports %q: write *, 22, 80,443 or 8000-8999", d, part)
		}
		out = append(out, tailcfg.PortRange{First: uint16(first), Last: uint16(last)})
	}
	return host, out, nil
}
