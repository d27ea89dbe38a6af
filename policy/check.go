package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// selectorHelp lists what a source or destination may be.
const selectorHelp = `write *, a user, group:NAME, tag:NAME, a host, an IP or CIDR, ws:NAME, ws:owner:USER, env:NAME, env:NAME/SVC or (dst only) autogroup:self`

func (p *Policy) check(l locator) error {
	for _, c := range []func(locator) error{p.checkGroups, p.checkTagOwners, p.checkHosts, p.checkACLs, p.checkSSH, p.checkEgress, p.checkTests} {
		if err := c(l); err != nil {
			return err
		}
	}
	return nil
}

func (p *Policy) checkGroups(l locator) error {
	for g := range p.Groups {
		if !strings.HasPrefix(g, "group:") {
			return l.errorf("/groups/"+pointerKey(g), "groups", "%q must be written group:NAME", g)
		}
	}
	return nil
}

func (p *Policy) checkTagOwners(l locator) error {
	for t, owners := range p.TagOwners {
		ptr := "/tagOwners/" + pointerKey(t)
		if !strings.HasPrefix(t, "tag:") {
			return l.errorf(ptr, "tagOwners", "%q must be written tag:NAME", t)
		}
		for _, o := range owners {
			if err := p.checkGroupRef(o); err != nil {
				return l.errorf(ptr, "tagOwners["+t+"]", "%v", err)
			}
		}
	}
	return nil
}

func (p *Policy) checkHosts(l locator) error {
	for name, addr := range p.Hosts {
		_, errA := netip.ParseAddr(addr)
		_, errP := netip.ParsePrefix(addr)
		if errA != nil && errP != nil {
			return l.errorf("/hosts/"+pointerKey(name), "hosts", "%q: %q is no address: write an IP (10.1.2.3) or a CIDR (10.1.0.0/16)", name, addr)
		}
		if strings.Contains(name, ":") {
			return l.errorf("/hosts/"+pointerKey(name), "hosts", "%q: a host name has no colon (write office, not %s)", name, name)
		}
	}
	return nil
}

func (p *Policy) checkACLs(l locator) error {
	for i, a := range p.ACLs {
		ptr, where := fmt.Sprintf("/acls/%d", i), fmt.Sprintf("acls[%d]", i)
		if a.Action != "accept" {
			return l.errorf(ptr, where, "action %q: the only action is accept (everything else is denied)", a.Action)
		}
		if len(a.Src) == 0 || len(a.Dst) == 0 {
			return l.errorf(ptr, where, "needs src and dst")
		}
		if err := p.checkSrcs(l, ptr, where, a.Src); err != nil {
			return err
		}
		for j, d := range a.Dst {
			host, _, err := splitDst(d)
			if err == nil {
				err = p.checkSelector(host, true)
			}
			if err != nil {
				return l.errorf(fmt.Sprintf("%s/dst/%d", ptr, j), where, "%v (api:443, ws:api:22, env:staging/db:5432, *:*)", err)
			}
		}
	}
	return nil
}

func (p *Policy) checkSSH(l locator) error {
	for i, s := range p.SSH {
		ptr, where := fmt.Sprintf("/ssh/%d", i), fmt.Sprintf("ssh[%d]", i)
		if s.Action != "accept" {
			return l.errorf(ptr, where, "action %q: the only action is accept", s.Action)
		}
		if len(s.Src) == 0 || len(s.Dst) == 0 || len(s.Users) == 0 {
			return l.errorf(ptr, where, "needs src, dst and users")
		}
		if err := p.checkSrcs(l, ptr, where, s.Src); err != nil {
			return err
		}
	}
	return nil
}

func (p *Policy) checkEgress(l locator) error {
	for i, e := range p.Egress {
		ptr, where := fmt.Sprintf("/egress/%d", i), fmt.Sprintf("egress[%d]", i)
		if len(e.Src) == 0 || e.Exit == "" {
			return l.errorf(ptr, where, `needs src and exit: {"src": ["ws:api"], "exit": "NAME"}`)
		}
		for j, s := range e.Src {
			if s != "*" && !strings.HasPrefix(s, "ws:") || s == "ws:" || s == "ws:owner:" {
				return l.errorf(fmt.Sprintf("%s/src/%d", ptr, j), where, "src %q: egress pins workspaces: write ws:NAME, ws:owner:USER or *", s)
			}
		}
		if strings.ContainsAny(e.Exit, ": /") {
			return l.errorf(ptr+"/exit", where, "exit %q: write the exit's name (meshctl exit list)", e.Exit)
		}
	}
	return nil
}

func (p *Policy) checkTests(l locator) error {
	for i, t := range p.Tests {
		ptr, where := fmt.Sprintf("/tests/%d", i), fmt.Sprintf("tests[%d]", i)
		if t.Src == "" || len(t.Accept)+len(t.Deny) == 0 {
			return l.errorf(ptr, where, `needs src and accept or deny: {"src": "alice", "accept": ["ws:api:22"], "deny": ["env:prod:5432"]}`)
		}
		if err := p.checkSelector(t.Src, false); err != nil {
			return l.errorf(ptr+"/src", where, "%v", err)
		}
		for k, list := range map[string][]string{"accept": t.Accept, "deny": t.Deny} {
			for j, d := range list {
				if err := p.checkTestDst(d); err != nil {
					return l.errorf(fmt.Sprintf("%s/%s/%d", ptr, k, j), where, "%s: %v", k, err)
				}
			}
		}
	}
	return nil
}

// checkTestDst checks a test's "host:port": one port, as a connection would use.
func (p *Policy) checkTestDst(d string) error {
	host, ports, err := splitDst(d)
	if err != nil {
		return err
	}
	if len(ports) != 1 || ports[0].First != ports[0].Last || host == "*" {
		return fmt.Errorf("dst %q: a test names one destination and one port: ws:api:22", d)
	}
	return p.checkSelector(host, false)
}

func (p *Policy) checkSrcs(l locator, ptr, where string, srcs []string) error {
	for j, s := range srcs {
		if err := p.checkSelector(s, false); err != nil {
			return l.errorf(fmt.Sprintf("%s/src/%d", ptr, j), where, "%v", err)
		}
	}
	return nil
}

// checkSelector checks a source or destination host; isDst allows autogroup:self.
func (p *Policy) checkSelector(s string, isDst bool) error {
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	if _, err := netip.ParsePrefix(s); err == nil {
		return nil
	}
	kind, rest, _ := strings.Cut(s, ":")
	switch {
	case s == "":
		return fmt.Errorf("an empty name: %s", selectorHelp)
	case s == "autogroup:self" && isDst:
		return nil
	case s == "autogroup:self":
		return fmt.Errorf("autogroup:self is a destination only: put the users in src (or *) and autogroup:self in dst")
	case !strings.Contains(s, ":"):
		if strings.Contains(s, "/") {
			return fmt.Errorf("%q is no CIDR: write 10.1.0.0/16", s)
		}
		return nil // a user, a host's mesh name or a hosts entry
	case kind == "group":
		return p.checkGroupRef(s)
	case kind == "tag" && rest != "" && !strings.Contains(rest, ":"):
		return nil
	case kind == "ws" && rest != "" && rest != "owner:" && strings.Count(rest, ":") <= 1 && (!strings.Contains(rest, ":") || strings.HasPrefix(rest, "owner:")):
		return nil
	case kind == "env" && rest != "" && !strings.Contains(rest, ":") && !strings.HasPrefix(rest, "/") && !strings.HasSuffix(rest, "/") && strings.Count(rest, "/") <= 1:
		return nil
	}
	return fmt.Errorf("%q is no selector: %s", s, selectorHelp)
}

// checkGroupRef checks that a group named is defined.
func (p *Policy) checkGroupRef(s string) error {
	if strings.HasPrefix(s, "group:") {
		if _, ok := p.Groups[s]; !ok {
			return fmt.Errorf("%s is not defined under groups", s)
		}
	}
	return nil
}
