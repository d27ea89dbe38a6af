package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"go4.org/netipx"
	"tailscale.com/tailcfg"
	"tailscale.com/wgengine/filter"
)

// ErrNoMatch is a name that selects nothing on the mesh of the moment.
var ErrNoMatch = errors.New("names no machine, workspace or service on the mesh now (check the spelling: meshctl node list, ws list, env list)")

// Verdict answers whether a source may reach a destination's port, and why.
type Verdict struct {
	Allowed bool
	Rule    int    // the index of the acl that allows it; -1 when none does
	Text    string // that acl as written, or why nothing of the policy's allows it
}

// Explain says whether src (a user, host, IP or selector) may reach dst ("ws:api:22") under
// filter, the complete packet filter compiled from p against hosts, and which acl allows it.
// Every address of src must reach every address of dst for it to be allowed.
func (p *Policy) Explain(hosts []Host, rules []tailcfg.FilterRule, src, dst string) (Verdict, error) {
	if err := p.checkSelector(src, false); err != nil {
		return Verdict{}, fmt.Errorf("src: %w", err)
	}
	if err := p.checkTestDst(dst); err != nil {
		return Verdict{}, err
	}
	from, to, port, err := p.endpoints(hosts, src, dst)
	if err != nil {
		return Verdict{}, err
	}
	if denied, ok := blocked(rules, from, to, port); ok {
		return Verdict{Rule: -1, Text: "no rule allows " + denied + " (everything not accepted is denied)"}, nil
	}
	for i := range p.ACLs {
		acl, err := p.aclRules(i, hosts)
		if err != nil {
			return Verdict{}, err
		}
		if _, ok := blocked(acl, from, to, port); !ok {
			return Verdict{Allowed: true, Rule: i, Text: p.aclText(i)}, nil
		}
	}
	return Verdict{Allowed: true, Rule: -1, Text: "no acl: coord's own rules allow it (an environment reached by its own services, connected workspaces and owner's and admins' machines; an intercept)"}, nil
}

// endpoints resolves src and dst ("host:port") to addresses; each must name some.
func (p *Policy) endpoints(hosts []Host, src, dst string) (from, to []netip.Addr, port uint16, err error) {
	host, ports, err := splitDst(dst)
	if err != nil {
		return nil, nil, 0, err
	}
	if from = p.addrs(src, hosts); len(from) == 0 {
		return nil, nil, 0, fmt.Errorf("src %q: %w", src, ErrNoMatch)
	}
	if to = p.addrs(host, hosts); len(to) == 0 {
		return nil, nil, 0, fmt.Errorf("dst %q: %w", host, ErrNoMatch)
	}
	return from, to, ports[0].First, nil
}

// addrs are the addresses name selects: an IP itself, or the hosts it matches.
func (p *Policy) addrs(name string, hosts []Host) []netip.Addr {
	if pfx, ok := p.prefix(name); ok && pfx.IsSingleIP() {
		return []netip.Addr{pfx.Addr()}
	}
	var out []netip.Addr
	for _, h := range hosts {
		if p.selects(name, h) && name != "*" {
			out = append(out, h.IPs...)
		}
	}
	return out
}

// blocked reports a pair of from × to that rules do not let through on TCP port, as a
// node's packet filter (tailscale's own) decides; ok is false when every pair passes.
func blocked(rules []tailcfg.FilterRule, from, to []netip.Addr, port uint16) (string, bool) {
	f := packetFilter(rules)
	checked := 0
	for _, a := range from {
		for _, b := range to {
			if a.BitLen() != b.BitLen() {
				continue
			}
			checked++
			if f == nil || f.CheckTCP(a, b, port) != filter.Accept {
				return fmt.Sprintf("%s → %s:%d", a, b, port), true
			}
		}
	}
	if checked == 0 {
		return fmt.Sprintf("%v → %v:%d (no IPv4 or IPv6 address on both sides)", from, to, port), true
	}
	return "", false
}

// packetFilter is rules as a node enforces them, or nil if they do not compile.
func packetFilter(rules []tailcfg.FilterRule) *filter.Filter {
	matches, err := filter.MatchesFromFilterRules(rules)
	if err != nil {
		return nil
	}
	var b netipx.IPSetBuilder
	b.AddPrefix(netip.PrefixFrom(netip.IPv4Unspecified(), 0))
	b.AddPrefix(netip.PrefixFrom(netip.IPv6Unspecified(), 0))
	local, _ := b.IPSet()
	return filter.New(matches, nil, local, nil, nil, func(string, ...any) {})
}

func (p *Policy) aclText(i int) string {
	b, _ := json.Marshal(p.ACLs[i])
	return fmt.Sprintf("acls[%d] %s", i, b)
}

// RunTests runs the policy's tests against rules, the complete packet filter compiled from p
// against hosts. The error names the first failing test (its index, line and src) and the
// destination that failed.
func (p *Policy) RunTests(hosts []Host, rules []tailcfg.FilterRule) error {
	for i, t := range p.Tests {
		if err := p.runTest(hosts, rules, t); err != nil {
			return fmt.Errorf("policy: %s (src %q): %w", p.testName(i), t.Src, err)
		}
	}
	return nil
}

func (p *Policy) runTest(hosts []Host, rules []tailcfg.FilterRule, t Test) error {
	for _, d := range t.Accept {
		v, err := p.Explain(hosts, rules, t.Src, d)
		if err != nil {
			return fmt.Errorf("accept %s: %w", d, err)
		}
		if !v.Allowed {
			return fmt.Errorf("accept %s fails: %s", d, v.Text)
		}
	}
	for _, d := range t.Deny {
		from, to, port, err := p.endpoints(hosts, t.Src, d)
		if errors.Is(err, ErrNoMatch) {
			continue // nothing there to reach: denied
		}
		if err != nil {
			return fmt.Errorf("deny %s: %w", d, err)
		}
		if a, b, ok := passed(rules, from, to, port); ok {
			v, err := p.Explain(hosts, rules, a.String(), fmt.Sprintf("%s:%d", b, port))
			if err != nil {
				return fmt.Errorf("deny %s: %w", d, err)
			}
			return fmt.Errorf("deny %s fails: %s → %s:%d is allowed by %s", d, a, b, port, v.Text)
		}
	}
	return nil
}

// passed is a pair of from × to that rules let through on TCP port, if any.
func passed(rules []tailcfg.FilterRule, from, to []netip.Addr, port uint16) (a, b netip.Addr, ok bool) {
	f := packetFilter(rules)
	for _, a := range from {
		for _, b := range to {
			if a.BitLen() == b.BitLen() && f != nil && f.CheckTCP(a, b, port) == filter.Accept {
				return a, b, true
			}
		}
	}
	return a, b, false
}

func (p *Policy) testName(i int) string {
	if i < len(p.testLines) && p.testLines[i] > 0 {
		return fmt.Sprintf("line %d: tests[%d]", p.testLines[i], i)
	}
	return fmt.Sprintf("tests[%d]", i)
}
