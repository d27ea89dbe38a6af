package control

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	"tailscale.com/tailcfg"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
)

// interceptSpecs are the intercepts of the services machine name runs, with the addresses
// of the workspaces they send traffic to, sorted by ID.
func interceptSpecs(store *fsm.Store, name string) []api.InterceptSpec {
	var out []api.InterceptSpec
	for _, e := range store.EnvironmentsOn(name) {
		for _, ic := range store.InterceptsOf(e.Name) {
			ws := store.Workspace(ic.Workspace)
			if ws == nil {
				continue // ended with its workspace; not yet gone from this read
			}
			spec := api.InterceptSpec{ID: ic.ID, EnvID: e.ID, Env: e.Name, Service: ic.Service, Port: ic.Port,
				TargetIPv4: ws.IPv4, TargetIPv6: ws.IPv6, TargetPort: ic.WorkspacePort}
			for _, h := range ic.Headers {
				spec.Headers = append(spec.Headers, api.HeaderMatch(h))
			}
			out = append(out, spec)
		}
	}
	slices.SortFunc(out, func(a, b api.InterceptSpec) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// recordIntercepts records what machine n reports of the intercepts of its services: one
// intercept.status with the reports that differ from what is stored. Reports on intercepts
// ended meanwhile, or of services another machine runs, are dropped with a log.
func (s *Server) recordIntercepts(ctx context.Context, store *fsm.Store, n *fsm.Node, reps []api.InterceptReport) {
	var sts []fsm.InterceptObserved
	for _, rep := range reps {
		st := fsm.InterceptObserved{ID: rep.ID, State: rep.State, Reason: rep.Reason, Connections: rep.Connections, Requests: rep.Requests}
		ic := store.Intercept(rep.ID)
		switch {
		case ic == nil || ic.ID != rep.ID:
			s.logf("control: report from %s on intercept %q: no such intercept (ended?)", n.Name, rep.ID)
		case !runsService(store, n.Name, ic):
			s.logf("control: report from %s on intercept %s: its service %s runs elsewhere", n.Name, ic.ID, ic.Target)
		case !ic.Holds(st):
			sts = append(sts, st)
		}
	}
	if len(sts) == 0 {
		return
	}
	if err := s.apply(ctx, "intercept.status", "node:"+n.Name, "", fsm.InterceptStatus{Machine: n.Name, Intercepts: sts}); err != nil {
		s.logf("control: intercept report from %s: %v", n.Name, err)
	}
}

func runsService(store *fsm.Store, machine string, ic *fsm.Intercept) bool {
	e := store.Environment(ic.Env)
	return e != nil && e.Machine == machine
}

// interceptRules let each intercepted service's addresses reach its workspace's addresses on
// the intercept's workspace port, over TCP, and nothing more: the path of the traffic its
// machine sends there.
func interceptRules(store *fsm.Store) []tailcfg.FilterRule {
	var out []tailcfg.FilterRule
	for _, ic := range store.Intercepts("") {
		e, ws := store.Environment(ic.Env), store.Workspace(ic.Workspace)
		if e == nil || ws == nil {
			continue
		}
		var src []netip.Addr
		for _, svc := range e.Services {
			if svc.Name == ic.Service {
				src = addrs(svc.IPv4, svc.IPv6)
			}
		}
		dst := addrs(ws.IPv4, ws.IPv6)
		if len(src) == 0 || len(dst) == 0 {
			continue
		}
		r := tailcfg.FilterRule{IPProto: []int{6}}
		for _, a := range src {
			r.SrcIPs = append(r.SrcIPs, a.String())
		}
		port := uint16(ic.WorkspacePort)
		for _, a := range dst {
			r.DstPorts = append(r.DstPorts, tailcfg.NetPortRange{IP: a.String(), Ports: tailcfg.PortRange{First: port, Last: port}})
		}
		out = append(out, r)
	}
	return out
}
