package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/node/intercept"
	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/wsnet"
)

const (
	// probeEvery is how often each intercept's workspace is probed: traffic falls back to the
	// service within two probes of the workspace going quiet.
	probeEvery   = 500 * time.Millisecond
	probeTimeout = 400 * time.Millisecond
	// countsEvery is how often counters alone (connections, requests) are reported.
	countsEvery = 2 * time.Second
)

// interceptor applies the intercepts of the services this machine runs (flow 5), in each
// service's network namespace: global ones as nftables DNAT to the workspace, personal ones
// as a redirect to an HTTP proxy this agent serves inside the namespace. It probes every
// workspace and, while one does not answer on its port, sends its traffic to the service
// again. The diverts stay in the kernel while the agent is down; a new agent takes them over
// from coord's state.
type interceptor struct {
	a       *agent
	reports chan<- api.InterceptReport
	want    chan *api.MachineState // capacity 1: only the latest counts

	applied map[string]appliedDiverts // by service ID: what the namespace holds
	proxies map[proxyKey]*proxy
	sent    map[string]api.InterceptReport // by intercept ID
	sentAt  map[string]time.Time
}

type appliedDiverts struct {
	ns      nsID
	diverts []wsnet.Divert
}

// proxyKey is one personal proxy: a service port, in one incarnation of its namespace.
type proxyKey struct {
	svc  string
	ns   nsID
	port int
}

type proxy struct {
	p  *intercept.Proxy
	ln net.Listener
}

// interceptTarget is one intercept as this agent applies it.
type interceptTarget struct {
	spec api.InterceptSpec
	svc  string       // the service's ID on this machine
	net  wsnet.Config // the service's namespace
	addr netip.Addr   // the service's own IPv4
	err  error        // why it cannot be applied (the service is not running)
	up   bool         // the workspace answered the last probe
}

func newInterceptor(a *agent, reports chan<- api.InterceptReport) *interceptor {
	return &interceptor{a: a, reports: reports, want: make(chan *api.MachineState, 1),
		applied: map[string]appliedDiverts{}, proxies: map[proxyKey]*proxy{},
		sent: map[string]api.InterceptReport{}, sentAt: map[string]time.Time{}}
}

// apply hands the interceptor the machine's latest state.
func (ic *interceptor) apply(st *api.MachineState) {
	select {
	case <-ic.want:
	default:
	}
	ic.want <- st
}

// run keeps the intercepts applied until ctx ends; the diverts stay, the proxies close.
func (ic *interceptor) run(ctx context.Context) {
	defer ic.a.wg.Done()
	defer ic.closeProxies()
	var st *api.MachineState
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case st = <-ic.want:
		case <-tick.C:
		}
		if st != nil {
			ic.reconcile(ctx, st)
		}
	}
}

// reconcile probes every workspace, then makes each service's diverts and proxies what the
// intercepts and the probes say, and reports what changed.
func (ic *interceptor) reconcile(ctx context.Context, st *api.MachineState) {
	targets := ic.targets(st)
	ic.probe(ctx, targets)
	bySvc := map[string][]*interceptTarget{}
	for _, t := range targets {
		if t.err == nil {
			bySvc[t.svc] = append(bySvc[t.svc], t)
		}
	}
	// Every service of the machine's environments is set, so a divert left by an intercept
	// stopped while the agent was down goes too.
	for _, env := range st.Environments {
		for _, sa := range env.Services {
			id := serviceID(env.ID, sa.Name)
			ic.setDiverts(id, serviceNet(id, sa), bySvc[id])
		}
	}
	ic.dropProxies(targets)
	for _, t := range targets {
		ic.report(t)
	}
	for id := range ic.sent {
		if !slices.ContainsFunc(targets, func(t *interceptTarget) bool { return t.spec.ID == id }) {
			delete(ic.sent, id)
			delete(ic.sentAt, id)
		}
	}
}

// targets are st's intercepts, each with its service's namespace and address.
func (ic *interceptor) targets(st *api.MachineState) []*interceptTarget {
	var out []*interceptTarget
	for _, spec := range st.Intercepts {
		t := &interceptTarget{spec: spec}
		out = append(out, t)
		env := findEnvSpec(st, spec.EnvID)
		if env == nil {
			t.err = fmt.Errorf("environment %s is not on this machine", spec.Env)
			continue
		}
		if env.Desired != api.Running {
			t.err = fmt.Errorf("environment %s is down", spec.Env)
			continue
		}
		i := slices.IndexFunc(env.Services, func(sa api.ServiceAddr) bool { return sa.Name == spec.Service })
		if i < 0 {
			t.err = fmt.Errorf("environment %s has no service %s", spec.Env, spec.Service)
			continue
		}
		t.svc = serviceID(env.ID, spec.Service)
		t.net = serviceNet(t.svc, env.Services[i])
		t.addr = t.net.IPv4
		if _, err := os.Stat(t.net.NsPath()); err != nil {
			t.err = fmt.Errorf("service %s is not running", spec.Service)
		}
	}
	return out
}

// serviceNet is the namespace of service id, with its addresses (what its diverts' replies
// leave from).
func serviceNet(id string, sa api.ServiceAddr) wsnet.Config {
	s := ctrd.ServiceSpec{ID: id}
	s.IPv4, _ = netip.ParseAddr(sa.IPv4)
	s.IPv6, _ = netip.ParseAddr(sa.IPv6)
	return ctrd.ServiceNetConfig(s)
}

func findEnvSpec(st *api.MachineState, id string) *api.EnvironmentSpec {
	for i := range st.Environments {
		if st.Environments[i].ID == id {
			return &st.Environments[i]
		}
	}
	return nil
}

// probe connects to every workspace from inside its service's namespace (the source the
// mesh lets through), all at once.
func (ic *interceptor) probe(ctx context.Context, targets []*interceptTarget) {
	var wg sync.WaitGroup
	for _, t := range targets {
		if t.err != nil {
			continue
		}
		wg.Go(func() {
			dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
				return wsnet.Dial(ctx, t.net, network, addr)
			}
			t.up = intercept.Probe(ctx, dial, t.target4(), probeTimeout) == nil
		})
	}
	wg.Wait()
}

func (t *interceptTarget) target4() string {
	return net.JoinHostPort(t.spec.TargetIPv4, fmt.Sprint(t.spec.TargetPort))
}

// setDiverts makes service id's namespace divert what ts say: a global intercept's port to its
// workspace while it answers, a personal one's port to the proxy. Unchanged, it is left
// alone (replacing the table would reset its counters).
func (ic *interceptor) setDiverts(id string, c wsnet.Config, ts []*interceptTarget) {
	ns, err := netnsID(c)
	if err != nil {
		delete(ic.applied, id)
		return // not running: nothing to divert, and nothing to clean
	}
	var diverts []wsnet.Divert
	for _, t := range ts {
		if len(t.spec.Headers) == 0 {
			if t.up {
				diverts = append(diverts, globalDivert(t.spec))
			}
			continue
		}
		p, err := ic.proxyFor(t, ns)
		if err != nil {
			t.err = err
			continue
		}
		if !slices.ContainsFunc(diverts, func(d wsnet.Divert) bool { return d.Port == uint16(t.spec.Port) }) {
			diverts = append(diverts, wsnet.Divert{ID: "proxy-" + fmt.Sprint(t.spec.Port), Port: uint16(t.spec.Port), Proxy: p.port()})
		}
	}
	for _, t := range ts {
		if len(t.spec.Headers) > 0 && t.err == nil {
			ic.proxies[proxyKey{id, ns, t.spec.Port}].p.SetRoutes(routesOf(ts, t.spec.Port))
		}
	}
	if a, ok := ic.applied[id]; ok && a.ns == ns && slices.Equal(a.diverts, diverts) {
		return
	}
	if err := wsnet.SetDiverts(c, diverts); err != nil {
		ic.a.logf("agent: intercepts of %s: %v", id, err)
		for _, t := range ts {
			t.err = err
		}
		delete(ic.applied, id)
		return
	}
	ic.applied[id] = appliedDiverts{ns: ns, diverts: diverts}
}

func globalDivert(s api.InterceptSpec) wsnet.Divert {
	d := wsnet.Divert{ID: s.ID, Port: uint16(s.Port)}
	if a, err := netip.ParseAddr(s.TargetIPv4); err == nil {
		d.To4 = netip.AddrPortFrom(a, uint16(s.TargetPort))
	}
	if a, err := netip.ParseAddr(s.TargetIPv6); err == nil {
		d.To6 = netip.AddrPortFrom(a, uint16(s.TargetPort))
	}
	return d
}

// routesOf are the personal intercepts of port, for its proxy.
func routesOf(ts []*interceptTarget, port int) []intercept.Route {
	var out []intercept.Route
	for _, t := range ts {
		if t.spec.Port == port && len(t.spec.Headers) > 0 {
			out = append(out, intercept.Route{ID: t.spec.ID, Headers: t.spec.Headers, Target: t.target4(), Down: !t.up})
		}
	}
	return out
}

// proxyFor is the proxy in front of t's service port, started in the namespace ns if there
// is none there yet.
func (ic *interceptor) proxyFor(t *interceptTarget, ns nsID) (*proxy, error) {
	k := proxyKey{t.svc, ns, t.spec.Port}
	if p := ic.proxies[k]; p != nil {
		return p, nil
	}
	ln, err := wsnet.Listen(t.net, "tcp", ":0")
	if err != nil {
		return nil, fmt.Errorf("starting the proxy for %s:%d: %w", t.spec.Service, t.spec.Port, err)
	}
	c := t.net
	p := &proxy{ln: ln, p: &intercept.Proxy{
		Service: net.JoinHostPort(t.addr.String(), fmt.Sprint(t.spec.Port)),
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return wsnet.Dial(ctx, c, network, addr)
		},
	}}
	ic.proxies[k] = p
	ic.a.wg.Add(1)
	go func() {
		defer ic.a.wg.Done()
		if err := p.p.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			ic.a.logf("agent: intercept proxy for %s:%d: %v", t.spec.Service, t.spec.Port, err)
		}
	}()
	return p, nil
}

func (p *proxy) port() uint16 { return uint16(p.ln.Addr().(*net.TCPAddr).Port) }

// dropProxies closes the proxies no personal intercept needs any more.
func (ic *interceptor) dropProxies(ts []*interceptTarget) {
	for k, p := range ic.proxies {
		keep := slices.ContainsFunc(ts, func(t *interceptTarget) bool {
			return t.err == nil && t.svc == k.svc && t.spec.Port == k.port && len(t.spec.Headers) > 0 && ic.applied[k.svc].ns == k.ns
		})
		if !keep {
			p.ln.Close()
			delete(ic.proxies, k)
		}
	}
}

func (ic *interceptor) closeProxies() {
	for _, p := range ic.proxies {
		p.ln.Close()
	}
}

// report sends t's state when it changed, and its counters at most every countsEvery.
func (ic *interceptor) report(t *interceptTarget) {
	r := api.InterceptReport{ID: t.spec.ID, State: api.InterceptActive}
	switch {
	case t.err != nil:
		r.State, r.Reason = api.InterceptFailed, t.err.Error()
	case !t.up:
		r.State, r.Reason = api.InterceptTargetDown, fmt.Sprintf("%s does not answer on port %d: traffic goes to the service", t.spec.TargetIPv4, t.spec.TargetPort)
	}
	if t.err == nil {
		if len(t.spec.Headers) > 0 {
			if p := ic.proxies[proxyKey{t.svc, ic.applied[t.svc].ns, t.spec.Port}]; p != nil {
				r.Requests = p.p.Requests()[t.spec.ID]
			}
		} else if counts, err := wsnet.DivertCounts(t.net); err == nil {
			r.Connections = counts[t.spec.ID]
		}
	}
	last, ok := ic.sent[r.ID]
	if ok && last == r {
		return
	}
	countsOnly := ok && last.State == r.State && last.Reason == r.Reason
	if countsOnly && time.Since(ic.sentAt[r.ID]) < countsEvery {
		return
	}
	ic.sent[r.ID], ic.sentAt[r.ID] = r, time.Now()
	select {
	case ic.reports <- r:
	default: // the reporter is behind: the next change says it again
		delete(ic.sent, r.ID)
	}
}
