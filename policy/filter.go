package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"tailscale.com/tailcfg"
)

// Kind is what a Host is.
type Kind uint8

const (
	Machine   Kind = iota // a node: a laptop, a workmachine
	Workspace             // named by ws:NAME, ws:owner:USER
	Service               // an environment's service, named by env:ENV, env:ENV/NAME
)

// Host is a machine, workspace or environment service on the mesh as the policy sees it.
// Users, groups, tags and bare names select machines only; ws: and env: the others.
type Host struct {
	Kind Kind
	Name string // its mesh name (a service's own name, without its environment)
	User string // its owner's name
	Env  string // a service's environment
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
	for i := range p.ACLs {
		r, err := p.aclRules(i, hosts)
		if err != nil {
			return nil, err
		}
		rules = append(rules, r...)
	}
	return rules, nil
}

// aclRules compiles acl i: one rule for its plain destinations, and one per user for
// autogroup:self (that user's sources reach that user's machines and workspaces).
func (p *Policy) aclRules(i int, hosts []Host) ([]tailcfg.FilterRule, error) {
	a := p.ACLs[i]
	var r tailcfg.FilterRule
	for _, s := range a.Src {
		r.SrcIPs = append(r.SrcIPs, p.resolve(s, hosts)...)
	}
	var self []tailcfg.PortRange
	for _, d := range a.Dst {
		host, ports, err := splitDst(d)
		if err != nil {
			return nil, fmt.Errorf("policy: acls[%d]: %w", i, err)
		}
		if host == "autogroup:self" {
			self = append(self, ports...)
			continue
		}
		r.DstPorts = append(r.DstPorts, dstPorts(p.resolve(host, hosts), ports)...)
	}
	var out []tailcfg.FilterRule
	if len(r.SrcIPs) > 0 && len(r.DstPorts) > 0 {
		out = append(out, r)
	}
	if len(self) > 0 {
		out = append(out, p.selfRules(a.Src, hosts, self)...)
	}
	return out, nil
}

func dstPorts(ips []string, ports []tailcfg.PortRange) []tailcfg.NetPortRange {
	var out []tailcfg.NetPortRange
	for _, ip := range ips {
		for _, pr := range ports {
			out = append(out, tailcfg.NetPortRange{IP: ip, Ports: pr})
		}
	}
	return out
}

// selfRules let each user's own hosts that srcs select reach that user's own hosts (their
// untagged machines and their workspaces) on ports.
func (p *Policy) selfRules(srcs []string, hosts []Host, ports []tailcfg.PortRange) []tailcfg.FilterRule {
	var users []string
	for _, h := range hosts {
		if ownHost(h) && !slices.Contains(users, h.User) {
			users = append(users, h.User)
		}
	}
	slices.Sort(users)
	var out []tailcfg.FilterRule
	for _, u := range users {
		var r tailcfg.FilterRule
		var own []string
		for _, h := range hosts {
			if !ownHost(h) || h.User != u {
				continue
			}
			ips := addrStrings(h.IPs)
			own = append(own, ips...)
			if slices.ContainsFunc(srcs, func(s string) bool { return p.selects(s, h) }) {
				r.SrcIPs = append(r.SrcIPs, ips...)
			}
		}
		r.DstPorts = dstPorts(own, ports)
		if len(r.SrcIPs) > 0 && len(r.DstPorts) > 0 {
			out = append(out, r)
		}
	}
	return out
}

// ownHost reports whether h belongs to its user for autogroup:self: an untagged machine or a
// workspace.
func ownHost(h Host) bool {
	return h.User != "" && (h.Kind == Machine && len(h.Tags) == 0 || h.Kind == Workspace)
}

func addrStrings(ips []netip.Addr) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// selects reports whether source s selects host h: by name, or by address.
func (p *Policy) selects(s string, h Host) bool {
	if s == "*" {
		return true
	}
	if pfx, ok := p.prefix(s); ok {
		return slices.ContainsFunc(h.IPs, pfx.Contains)
	}
	return p.matches(s, h)
}

// prefix is s as addresses, when it is an IP, a CIDR or a hosts entry.
func (p *Policy) prefix(s string) (netip.Prefix, bool) {
	if a, ok := p.Hosts[s]; ok {
		s = a
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(ip, ip.BitLen()), true
	}
	if pfx, err := netip.ParsePrefix(s); err == nil {
		return pfx, true
	}
	return netip.Prefix{}, false
}

// resolve turns a policy name into addresses: "*", an IP or CIDR, a hosts entry, a tag, a
// group, a user, a host's mesh name, or a ws: or env: selector.
func (p *Policy) resolve(name string, hosts []Host) []string {
	if name == "*" {
		return []string{"*"}
	}
	if pfx, ok := p.prefix(name); ok {
		if pfx.IsSingleIP() {
			return []string{pfx.Addr().String()}
		}
		return []string{pfx.String()}
	}
	var out []string
	for _, h := range hosts {
		if p.matches(name, h) {
			out = append(out, addrStrings(h.IPs)...)
		}
	}
	return out
}

func (p *Policy) matches(name string, h Host) bool {
	kind, rest, _ := strings.Cut(name, ":")
	switch {
	case kind == "ws" && strings.HasPrefix(rest, "owner:"):
		return h.Kind == Workspace && h.User == strings.TrimPrefix(rest, "owner:")
	case kind == "ws":
		return h.Kind == Workspace && h.Name == rest
	case kind == "env":
		env, svc, one := strings.Cut(rest, "/")
		return h.Kind == Service && h.Env == env && (!one || h.Name == svc)
	case h.Kind != Machine:
		return false
	case kind == "tag":
		return slices.Contains(h.Tags, name)
	case kind == "group":
		return len(h.Tags) == 0 && slices.Contains(p.Groups[name], h.User)
	default:
		// A user's machines are the untagged ones they own (tagged machines belong to their tags).
		return name == h.Name || len(h.Tags) == 0 && name == h.User
	}
}

// ExitFor is the exit the egress section pins workspace ws (owned by user) to, or "".
func (p *Policy) ExitFor(ws, user string) string {
	h := Host{Kind: Workspace, Name: ws, User: user}
	for _, e := range p.Egress {
		if slices.ContainsFunc(e.Src, func(s string) bool { return s == "*" || p.matches(s, h) }) {
			return e.Exit
		}
	}
	return ""
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
