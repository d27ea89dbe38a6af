package control

import (
	"net/netip"
	"slices"

	"tailscale.com/tailcfg"

	"meshwork.dev/coord/adminapi"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/policy"
)

// compileRules is the packet filter policy p (nil: none set, AllowAll) gives the current
// state: its acls, environments walled off, intercepts let through. nodes are the store's.
func compileRules(store *fsm.Store, p *policy.Policy, nodes []*fsm.Node) ([]tailcfg.FilterRule, error) {
	rules := policy.AllowAll
	if p != nil {
		var err error
		if rules, err = p.Filter(hosts(store, nodes)); err != nil {
			return nil, err
		}
	}
	rules = isolate(rules, store.Environments(""), func(e *fsm.Environment) []netip.Addr { return allowed(store, e) })
	rules = slices.Concat(rules, interceptRules(store)) // a new slice: policy.AllowAll is shared
	if rules == nil {
		rules = []tailcfg.FilterRule{} // nil would mean "unchanged" to the client
	}
	return rules, nil
}

// hosts are the machines, workspaces and environment services as the policy names them.
func hosts(store *fsm.Store, nodes []*fsm.Node) []policy.Host {
	var out []policy.Host
	for _, n := range nodes {
		out = append(out, policy.Host{Kind: policy.Machine, Name: n.Name, Tags: n.Tags,
			User: userName(store, n.UserID), IPs: addrs(n.IPv4, n.IPv6)})
	}
	for _, w := range store.Workspaces("") {
		out = append(out, policy.Host{Kind: policy.Workspace, Name: w.Name,
			User: userName(store, w.OwnerID), IPs: addrs(w.IPv4, w.IPv6)})
	}
	for _, e := range store.Environments("") {
		for _, svc := range e.Services {
			out = append(out, policy.Host{Kind: policy.Service, Name: svc.Name, Env: e.Name,
				User: userName(store, e.OwnerID), IPs: addrs(svc.IPv4, svc.IPv6)})
		}
	}
	return out
}

func userName(store *fsm.Store, id string) string {
	if u := store.User(id); u != nil {
		return u.Name
	}
	return ""
}

// Policies answers the admin API's questions about a policy against the state of the
// moment: whether its tests pass, and what it allows. Its zero value is ready.
type Policies struct{}

// Test runs p's tests against the filter p would give the nodes now.
func (Policies) Test(store *fsm.Store, p *policy.Policy) error {
	nodes := store.Nodes("")
	rules, err := compileRules(store, p, nodes)
	if err != nil {
		return err
	}
	return p.RunTests(hosts(store, nodes), rules)
}

// Explain says whether src may reach dst ("ws:api:22") under p (nil: no policy set).
func (Policies) Explain(store *fsm.Store, p *policy.Policy, src, dst string) (policy.Verdict, error) {
	nodes := store.Nodes("")
	rules, err := compileRules(store, p, nodes)
	if err != nil {
		return policy.Verdict{}, err
	}
	set := p
	if set == nil {
		set = new(policy.Policy)
	}
	v, err := set.Explain(hosts(store, nodes), rules, src, dst)
	if err == nil && p == nil && v.Allowed {
		v.Text = "no policy is set: every node reaches every port of every node (environments' services excepted)"
	}
	return v, err
}

var _ adminapi.PolicyEngine = Policies{}
