package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"

	"meshwork.dev/coord/api"
	"meshwork.dev/overlay/meshdns"
	"meshwork.dev/workspace/compose"
	"meshwork.dev/workspace/ctrd"
)

// envPlan is what an environment's compose file makes: each service's runtime spec, by
// name, and the order to start them in.
type envPlan struct {
	specs map[string]ctrd.ServiceSpec
	order []compose.Step
	bad   map[string]string // services that cannot run, with why (no mesh address)
}

// serviceID is the runtime's ID of an environment's service.
func serviceID(envID, svc string) string { return envID + "." + svc }

// envSearch are the search domains of a member of environment env, or of a workspace
// connected to it: its bare service names resolve first.
func envSearch(env, domain string) []string {
	return []string{env + "." + domain, domain}
}

// planEnv loads e's compose file and builds every service's spec.
func planEnv(e api.EnvironmentSpec, domain string) (*envPlan, error) {
	p, err := compose.Load(e.Name, []byte(e.Compose))
	if err != nil {
		return nil, err
	}
	order, err := compose.StartOrder(p)
	if err != nil {
		return nil, err
	}
	plan := &envPlan{specs: map[string]ctrd.ServiceSpec{}, order: order, bad: map[string]string{}}
	addrs := map[string]api.ServiceAddr{}
	for _, sa := range e.Services {
		addrs[sa.Name] = sa
	}
	hosts := envHosts(p, addrs)
	allow := parseAllow(e.Allow)
	for _, s := range p.Services {
		s.Secrets, err = fillFiles(s.Name, s.Secrets, e.Variables)
		if err == nil {
			s.Configs, err = fillFiles(s.Name, s.Configs, e.Variables)
		}
		if err != nil {
			plan.bad[s.Name] = err.Error()
			continue
		}
		spec := ctrd.ServiceSpec{ID: serviceID(e.ID, s.Name), Env: e.Name, EnvID: e.ID, Service: s,
			Hosts: hosts, DNS: []string{meshdns.Resolver.String()}, Search: envSearch(e.Name, domain), Allow: allow}
		sa := addrs[s.Name]
		if spec.IPv4, err = netip.ParseAddr(sa.IPv4); err != nil || !spec.IPv4.Is4() {
			plan.bad[s.Name] = fmt.Sprintf("service %s has no mesh IPv4 address from coord yet (%q)", s.Name, sa.IPv4)
			continue
		}
		spec.IPv6, _ = netip.ParseAddr(sa.IPv6) // optional
		spec.Hash = serviceHash(spec)
		plan.specs[s.Name] = spec
	}
	return plan, nil
}

// fillFiles gives each config or secret taken from a variable its content.
func fillFiles(svc string, files []compose.File, vars map[string]string) ([]compose.File, error) {
	out := slices.Clone(files)
	for i, f := range out {
		if f.FromEnv == "" {
			continue
		}
		v, ok := vars[f.FromEnv]
		if !ok {
			return nil, fmt.Errorf("service %s: %s takes its content from variable %s, which coord has no value for: set it where you run meshctl env create/update", svc, f.Name, f.FromEnv)
		}
		out[i].Content = compose.Sensitive(v)
	}
	return out, nil
}

// envHosts are the /etc/hosts lines of an environment's services: each by its name, its
// hostname and its aliases, at each of its addresses.
func envHosts(p *compose.Project, addrs map[string]api.ServiceAddr) []ctrd.HostEntry {
	var out []ctrd.HostEntry
	for _, s := range p.Services {
		names := []string{s.Name}
		if s.Hostname != "" && s.Hostname != s.Name {
			names = append(names, s.Hostname)
		}
		for _, al := range s.Aliases {
			if !slices.Contains(names, al) {
				names = append(names, al)
			}
		}
		for _, a := range []string{addrs[s.Name].IPv4, addrs[s.Name].IPv6} {
			if ip, err := netip.ParseAddr(a); err == nil {
				out = append(out, ctrd.HostEntry{Addr: ip, Names: names})
			}
		}
	}
	return out
}

// parseAllow turns coord's addresses into single-address prefixes (prefixes stay as they
// are); what does not parse is dropped: nothing is allowed by mistake.
func parseAllow(in []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range in {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
		} else if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

// serviceHash digests everything that defines s's container: its compose definition (with
// the contents of secrets and configs digested, never written out), its addresses and
// resolver. Hosts and Allow are left out: they change live (SetServicePeers), so adding or
// removing a service recreates no other.
func serviceHash(s ctrd.ServiceSpec) string {
	svc := s.Service
	svc.Secrets, svc.Configs = digestFiles(svc.Secrets), digestFiles(svc.Configs)
	b, err := json.Marshal(struct {
		Service    compose.Spec
		Env, EnvID string
		IPv4, IPv6 netip.Addr
		DNS        []string
		Search     []string
	}{svc, s.Env, s.EnvID, s.IPv4, s.IPv6, s.DNS, s.Search})
	if err != nil {
		panic(fmt.Sprintf("agent: hashing a service spec: %v", err)) // plain data: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

func digestFiles(files []compose.File) []compose.File {
	out := slices.Clone(files)
	for i := range out {
		sum := sha256.Sum256(out[i].Content)
		out[i].Content = sum[:]
	}
	return out
}
