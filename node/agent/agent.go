package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/node"
	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/wsexec"
)

// Runtime runs this machine's workspaces: workspace/ctrd on containerd, a fake in tests.
type Runtime interface {
	Run(ctx context.Context, s ctrd.Spec, progress func(ctrd.Status)) (ctrd.Status, error)
	Stop(ctx context.Context, name string) error
	Delete(ctx context.Context, name string) error
	List(ctx context.Context) ([]ctrd.Status, error)
	LogPath(name string) string
	Exec(ctx context.Context, name string, s wsexec.Spec) (wsexec.Process, error)
	SocketDir(name string) string // a host directory the workspace sees at ctrd.SocketsPath
}

var (
	_ Runtime  = (*ctrd.Runtime)(nil)
	_ Services = (*ctrd.Runtime)(nil)
)

// agent makes a workmachine run what coord wants on it. It follows the machine's desired
// state as a stream of changes (a long poll over the Noise channel, authenticated by the
// machine's own key), reconciles each workspace in a goroutine of its own (level-triggered,
// idempotent, retried with backoff: one stuck workspace never holds up another), reports
// what it observes, and advertises the workspaces' addresses so peers route them here.
// Workspaces keep running while the agent or coord is down; a new agent adopts them.
type agent struct {
	Config // Resync, Shield and Logf are read

	// node is the machine on the mesh, up (with a TUN, so the workspaces' addresses route);
	// nil in tests, which then serve no machine API.
	node *node.Node
	// newRuntime makes the runtime once the agent knows the machine's name on the mesh.
	newRuntime func(machine string) (Runtime, error)
	// sshDir, when set, makes the agent serve SSH into its workspaces (port 22 of each one's
	// address), keeping host keys and recordings there.
	sshDir string

	mu      sync.Mutex // guards workers and state
	workers map[string]*worker
	state   *api.MachineState // the last coord sent
	ssh     *wsSSH            // set once, before the workers start; nil without sshDir
	coord   *coordClient      // set once, before the workers start; nil in tests
	wsAPI   wsAPIs            // each running workspace's own API
	envs    *envs             // the environments' workers; nil until the runtime exists, or when it runs no services
	ics     *interceptor      // the intercepts of the services here; nil with envs
	wg      sync.WaitGroup    // the workers and the reporter
}

// source is coord as the agent sees it.
type source interface {
	// state answers what coord wants on the machine once it differs from last (nil: now).
	state(ctx context.Context, last *api.MachineState) (*api.MachineState, error)
	report(ctx context.Context, rep *api.MachineReport) error
	session(ctx context.Context, rep *api.SessionReport) error
}

// follow serves until ctx ends; the workspaces stay as they are when it returns. A coord that
// cannot be reached yet is retried: what runs here keeps running meanwhile.
func (a *agent) follow(ctx context.Context) error {
	var c *coordClient
	for fails := 1; ; fails++ {
		var err error
		if c, err = dialCoord(ctx, a.node); err == nil {
			break
		}
		wait := backoff(fails)
		a.logf("agent: %v (retrying in %v)", err, wait.Round(10*time.Millisecond))
		sleep(ctx, wait)
		if ctx.Err() != nil {
			return nil
		}
	}
	defer c.Close()
	a.coord = c
	return a.run(ctx, c, a.node.AdvertiseRoutes)
}

// started is called once the runtime exists: the SSH server, and with a node on the mesh,
// the machine API.
func (a *agent) started(ctx context.Context, rt Runtime, src source) error {
	if a.sshDir != "" {
		s, err := a.newSSH(rt, a.sshDir)
		if err != nil {
			return err
		}
		a.ssh = s
		a.wg.Add(1)
		go s.uploadSessions(ctx, a, src)
	}
	if a.node == nil {
		return nil
	}
	if err := a.serveMachine(ctx, rt); err != nil {
		a.logf("agent: %v (workspace logs are not served)", err)
	}
	return nil
}

// run follows src's desired state until ctx ends, handing each change to the reconcilers.
func (a *agent) run(ctx context.Context, src source, advertise func(context.Context, []netip.Prefix) error) error {
	ctx, cancel := context.WithCancel(ctx)
	reports := make(chan api.WorkspaceReport, 256)
	svcReports := make(chan api.ServiceReport, 256)
	icReports := make(chan api.InterceptReport, 256)
	defer func() {
		cancel()
		if a.ssh != nil {
			a.ssh.close()
		}
		a.wsAPI.closeAll()
		a.wg.Wait()
	}()
	a.wg.Add(1)
	go a.reporter(ctx, src, reports, svcReports, icReports)
	var (
		rt      Runtime
		last    *api.MachineState
		fails   int
		routes  routeState
		machine string
	)
	for ctx.Err() == nil {
		st, err := src.state(ctx, last)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			fails++
			wait := backoff(fails)
			a.logf("agent: %v (retrying in %v)", err, wait.Round(10*time.Millisecond))
			sleep(ctx, wait)
			continue
		}
		fails = 0
		if rt == nil || st.Machine != machine {
			if rt, err = a.runtimeFor(ctx, st, machine == "", src, reports); err != nil {
				return err
			}
			a.envsFor(ctx, rt, st, svcReports, icReports)
			machine = st.Machine
		}
		last = st
		a.mu.Lock()
		a.state = st
		a.mu.Unlock()
		a.apply(ctx, rt, st, reports)
		if a.envs != nil {
			a.envs.apply(st)
			a.ics.apply(st)
		} else if len(st.Environments) > 0 {
			a.logf("agent: this machine's runtime runs no environment services: %d environments wait", len(st.Environments))
		}
		routes.advertise(ctx, a, workspaceRoutes(st), advertise)
	}
	return nil
}

// runtimeFor makes the runtime for the machine st names (starting the servers on the first)
// and adopts the workspaces it already runs.
func (a *agent) runtimeFor(ctx context.Context, st *api.MachineState, first bool, src source, reports chan<- api.WorkspaceReport) (Runtime, error) {
	rt, err := a.newRuntime(st.Machine)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if first {
		if err := a.started(ctx, rt, src); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	a.adopt(ctx, rt, st, reports)
	return rt, nil
}

// envsFor starts reconciling environments and their intercepts once there is a runtime that
// runs services, adopting the services an earlier agent left.
func (a *agent) envsFor(ctx context.Context, rt Runtime, st *api.MachineState, reports chan<- api.ServiceReport, icReports chan<- api.InterceptReport) {
	svc, ok := rt.(Services)
	if !ok || a.envs != nil {
		return
	}
	a.envs = &envs{a: a, svc: svc, ctx: ctx, reports: reports}
	a.envs.adopt(ctx, st)
	a.ics = newInterceptor(a, icReports)
	a.wg.Add(1)
	go a.ics.run(ctx)
}

// routeState is what the agent last advertised.
type routeState struct {
	routes []netip.Prefix
	done   bool // routes were advertised (an empty list too)
}

// advertise advertises want unless it is what was advertised last.
func (r *routeState) advertise(ctx context.Context, a *agent, want []netip.Prefix, advertise func(context.Context, []netip.Prefix) error) {
	if r.done && slices.Equal(want, r.routes) {
		return
	}
	if err := advertise(ctx, want); err != nil {
		a.logf("agent: advertising workspace routes: %v", err)
		return
	}
	r.routes, r.done = want, true
}
