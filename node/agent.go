package node

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/node/sshd"
	"meshwork.dev/workspace/ctrd"
)

// Runtime runs this machine's workspaces: workspace/ctrd on containerd, a fake in tests.
type Runtime interface {
	Run(ctx context.Context, s ctrd.Spec, progress func(ctrd.Status)) (ctrd.Status, error)
	Stop(ctx context.Context, name string) error
	Delete(ctx context.Context, name string) error
	List(ctx context.Context) ([]ctrd.Status, error)
	LogPath(name string) string
	Exec(ctx context.Context, name string, s ctrd.ExecSpec) (ctrd.Process, error)
	SocketDir(name string) string // a host directory the workspace sees at ctrd.SocketsPath
}

var _ Runtime = (*ctrd.Runtime)(nil)

// Agent makes a workmachine run what coord wants on it. It follows the machine's desired
// state as a stream of changes (a long poll over the Noise channel, authenticated by the
// machine's own key), reconciles each workspace in a goroutine of its own (level-triggered,
// idempotent, retried with backoff: one stuck workspace never holds up another), reports
// what it observes, and advertises the workspaces' addresses so peers route them here.
// Workspaces keep running while the agent or coord is down; a new agent adopts them.
type Agent struct {
	// Node is the machine on the mesh, up (with a TUN, so the workspaces' addresses route).
	Node *Node
	// NewRuntime makes the runtime once the agent knows the machine's name on the mesh.
	NewRuntime func(machine string) (Runtime, error)
	// Resync is how often a workspace is checked again when nothing changed; default 10 s.
	Resync time.Duration
	// SSHDir, when set, makes the agent serve SSH into its workspaces (port 22 of each one's
	// address), keeping host keys and recordings there.
	SSHDir string
	// Shield says when repeated failed SSH logins from an address get it blocked (nftables
	// drops its SSH to every workspace here); zero values take sshd's defaults.
	Shield sshd.ShieldConfig
	// Logf logs; nil discards.
	Logf func(format string, args ...any)

	mu      sync.Mutex // guards workers and state
	workers map[string]*worker
	state   *api.MachineState // the last coord sent
	ssh     *wsSSH            // set once, before the workers start; nil without SSHDir
	wg      sync.WaitGroup    // the workers and the reporter
}

// source is coord as the agent sees it.
type source interface {
	// state answers what coord wants on the machine once it differs from last (nil: now).
	state(ctx context.Context, last *api.MachineState) (*api.MachineState, error)
	report(ctx context.Context, rep *api.MachineReport) error
	session(ctx context.Context, rep *api.SessionReport) error
}

// Run serves until ctx ends; the workspaces stay as they are when it returns. A coord that
// cannot be reached yet is retried: what runs here keeps running meanwhile.
func (a *Agent) Run(ctx context.Context) error {
	var c *coordClient
	for fails := 1; ; fails++ {
		var err error
		if c, err = a.Node.coord(ctx); err == nil {
			break
		}
		a.logf("agent: %v (retrying in %v)", err, backoff(fails))
		sleep(ctx, backoff(fails))
		if ctx.Err() != nil {
			return nil
		}
	}
	defer c.Close()
	return a.run(ctx, c, a.Node.AdvertiseRoutes)
}

// started is called once the runtime exists: the SSH server, and with a node on the mesh,
// the machine API.
func (a *Agent) started(ctx context.Context, rt Runtime, src source) error {
	if a.SSHDir != "" {
		s, err := a.newSSH(rt, a.SSHDir)
		if err != nil {
			return err
		}
		a.ssh = s
		a.wg.Add(1)
		go s.uploadSessions(ctx, a, src)
	}
	if a.Node == nil {
		return nil
	}
	if err := a.serveMachine(ctx, rt); err != nil {
		a.logf("agent: %v (workspace logs are not served)", err)
	}
	return nil
}

func (a *Agent) logf(format string, args ...any) {
	if a.Logf != nil {
		a.Logf(format, args...)
	}
}

func (a *Agent) run(ctx context.Context, src source, advertise func(context.Context, []netip.Prefix) error) error {
	ctx, cancel := context.WithCancel(ctx)
	reports := make(chan api.WorkspaceReport, 256)
	defer func() {
		cancel()
		if a.ssh != nil {
			a.ssh.close()
		}
		a.wg.Wait()
	}()
	a.wg.Add(1)
	go a.reporter(ctx, src, reports)
	var (
		rt      Runtime
		last    *api.MachineState
		fails   int
		routes  []netip.Prefix
		routed  bool
		machine string
	)
	for ctx.Err() == nil {
		st, err := src.state(ctx, last)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			fails++
			a.logf("agent: %v (retrying in %v)", err, backoff(fails))
			sleep(ctx, backoff(fails))
			continue
		}
		fails = 0
		if rt == nil || st.Machine != machine {
			if rt, err = a.NewRuntime(st.Machine); err != nil {
				return fmt.Errorf("agent: %w", err)
			}
			if machine == "" {
				if err := a.started(ctx, rt, src); err != nil {
					return fmt.Errorf("agent: %w", err)
				}
			}
			machine = st.Machine
			a.adopt(ctx, rt, st, reports)
		}
		last = st
		a.mu.Lock()
		a.state = st
		a.mu.Unlock()
		a.apply(ctx, rt, st, reports)
		if want := workspaceRoutes(st); !routed || !slices.Equal(want, routes) {
			if err := advertise(ctx, want); err != nil {
				a.logf("agent: advertising workspace routes: %v", err)
			} else {
				routes, routed = want, true
			}
		}
	}
	return nil
}

// adopt finds the workspaces this machine already runs (an earlier agent's), so those coord
// no longer wants are removed and the rest are taken over as they are.
func (a *Agent) adopt(ctx context.Context, rt Runtime, st *api.MachineState, reports chan<- api.WorkspaceReport) {
	have, err := rt.List(ctx)
	if err != nil {
		a.logf("agent: listing workspaces: %v", err)
		return
	}
	for _, h := range have {
		if !slices.ContainsFunc(st.Workspaces, func(w api.WorkspaceSpec) bool { return w.Name == h.Name }) {
			a.logf("agent: %s is no longer wanted here; removing it", h.Name)
			a.worker(ctx, rt, h.Name, reports).set(nil)
		}
	}
}

// apply hands every workspace its latest spec, and a nil one to those coord dropped.
func (a *Agent) apply(ctx context.Context, rt Runtime, st *api.MachineState, reports chan<- api.WorkspaceReport) {
	wanted := map[string]bool{}
	for _, w := range st.Workspaces {
		wanted[w.Name] = true
		spec := w
		spec.User = cmp.Or(spec.User, "dev")
		a.worker(ctx, rt, w.Name, reports).set(&wsWish{spec: spec, domain: st.Domain})
	}
	a.mu.Lock()
	var gone []*worker
	for name, w := range a.workers {
		if !wanted[name] {
			gone = append(gone, w)
		}
	}
	a.mu.Unlock()
	for _, w := range gone {
		w.set(nil)
	}
}

// workspaceRoutes are the single-address prefixes of every workspace on the machine.
func workspaceRoutes(st *api.MachineState) []netip.Prefix {
	var out []netip.Prefix
	for _, w := range st.Workspaces {
		for _, s := range []string{w.IPv4, w.IPv6} {
			if ip, err := netip.ParseAddr(s); err == nil {
				out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// wsWish is what one workspace should be; nil means gone.
type wsWish struct {
	spec   api.WorkspaceSpec
	domain string
}

func sameWish(a, b *wsWish) bool { return reflect.DeepEqual(a, b) }

// worker reconciles one workspace, by name, in its own goroutine.
type worker struct {
	name string
	want chan *wsWish // capacity 1: only the latest wish counts
	mu   *sync.Mutex  // the agent's: set and the worker's exit must not interleave
}

// set replaces the worker's wish with w.
func (w *worker) set(wish *wsWish) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.want:
	default:
	}
	w.want <- wish
}

// worker returns the named workspace's worker, starting one if there is none.
func (a *Agent) worker(ctx context.Context, rt Runtime, name string, reports chan<- api.WorkspaceReport) *worker {
	a.mu.Lock()
	defer a.mu.Unlock()
	if w := a.workers[name]; w != nil {
		return w
	}
	if a.workers == nil {
		a.workers = map[string]*worker{}
	}
	w := &worker{name: name, want: make(chan *wsWish, 1), mu: &a.mu}
	a.workers[name] = w
	a.wg.Add(1)
	go a.work(ctx, rt, w, reports)
	return w
}

// work reconciles w's workspace whenever its wish changes, again every Resync, and after a
// failure with growing backoff. It ends once a workspace that is no longer wanted is gone.
func (a *Agent) work(ctx context.Context, rt Runtime, w *worker, reports chan<- api.WorkspaceReport) {
	defer a.wg.Done()
	var (
		wish    *wsWish
		started bool   // wish holds a wish received
		done    bool   // the last reconcile succeeded
		runID   string // the ID of the workspace this name runs as, to notice a replacement
		fails   int
		timer   = time.NewTimer(time.Hour)
	)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case next := <-w.want:
			if started && sameWish(next, wish) {
				// Nothing new: the timer drives checks and retries, so a failure that
				// coord hears of does not come straight back as a retry.
				if wish == nil && done && a.retire(w) {
					return
				}
				continue
			}
			wish, started, fails = next, true, 0
		case <-timer.C:
		}
		err := a.reconcile(ctx, rt, w.name, wish, &runID, reports)
		done = err == nil
		if wish == nil && done && a.retire(w) {
			return
		}
		next := cmp.Or(a.Resync, 10*time.Second)
		if err != nil {
			fails++
			next = backoff(fails)
			a.logf("agent: %s: %v (again in %v)", w.name, err, next)
		}
		timer.Reset(next)
	}
}

// retire removes a finished worker unless a new wish for its name arrived meanwhile.
func (a *Agent) retire(w *worker) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(w.want) > 0 {
		return false
	}
	delete(a.workers, w.name)
	return true
}

// reconcile makes one workspace what its wish says and reports what it then is.
func (a *Agent) reconcile(ctx context.Context, rt Runtime, name string, wish *wsWish, runID *string, reports chan<- api.WorkspaceReport) error {
	gone := wish == nil || (*runID != "" && *runID != wish.spec.ID) // deleted, or replaced by another of its name
	if a.ssh != nil && (gone || wish.spec.Desired == api.Stopped) {
		a.ssh.down(name)
	}
	if gone {
		if err := rt.Delete(ctx, name); err != nil {
			return fmt.Errorf("removing: %w", err)
		}
		*runID = ""
		if wish == nil {
			a.logf("agent: %s removed", name)
			return nil
		}
	}
	say := func(st ctrd.Status) {
		reports <- api.WorkspaceReport{Name: name, State: string(st.State), Reason: st.Reason}
	}
	if wish.spec.Desired == api.Stopped {
		if err := rt.Stop(ctx, name); err != nil {
			return fmt.Errorf("stopping: %w", err)
		}
		say(ctrd.Status{Name: name, State: ctrd.StateStopped})
		return nil
	}
	spec, err := runtimeSpec(wish)
	if err != nil {
		say(ctrd.Status{Name: name, State: ctrd.StateFailed, Reason: err.Error()})
		return err
	}
	*runID = spec.ID
	st, err := rt.Run(ctx, spec, say)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		say(ctrd.Status{Name: name, State: ctrd.StateFailed, Reason: err.Error()})
		return err
	}
	rep := api.WorkspaceReport{Name: name, State: string(st.State), Reason: st.Reason}
	if a.ssh != nil && st.State == ctrd.StateRunning {
		if rep.HostKey, err = a.ssh.up(a, spec); err != nil {
			a.logf("agent: %s: serving ssh: %v", name, err)
		}
	}
	reports <- rep
	return nil
}

// runtimeSpec turns coord's spec into the runtime's.
func runtimeSpec(w *wsWish) (ctrd.Spec, error) {
	s := ctrd.Spec{ID: w.spec.ID, Name: w.spec.Name, User: w.spec.User, Image: w.spec.Image,
		CPU: w.spec.CPU, Memory: w.spec.Memory, DNS: []string{quad100}, Search: []string{w.domain}}
	var err error
	if s.IPv4, err = netip.ParseAddr(w.spec.IPv4); err != nil {
		return s, fmt.Errorf("workspace %s has no mesh address: %w", w.spec.Name, err)
	}
	if w.spec.IPv6 != "" {
		if s.IPv6, err = netip.ParseAddr(w.spec.IPv6); err != nil {
			return s, fmt.Errorf("workspace %s: bad IPv6 address: %w", w.spec.Name, err)
		}
	}
	return s, nil
}

// quad100 is the mesh's resolver, answered by the machine's node for packets on its TUN.
const quad100 = "100.100.100.100"

// reporter sends coord what the workers observe: batched, only the latest per workspace,
// retried until it lands (a report lost to a dead replica is sent to the next).
func (a *Agent) reporter(ctx context.Context, src source, reports <-chan api.WorkspaceReport) {
	defer a.wg.Done()
	pending := map[string]api.WorkspaceReport{}
	sent := map[string]api.WorkspaceReport{}
	add := func(r api.WorkspaceReport) {
		if sent[r.Name] != r {
			pending[r.Name] = r
		}
	}
	fails := 0
	var retry *time.Timer // set while a failed report waits to be sent again
	for {
		var retryC <-chan time.Time
		if retry != nil {
			retryC = retry.C
		}
		select {
		case <-ctx.Done():
			return
		case r := <-reports:
			add(r)
			drain(reports, add)
			if retry != nil {
				continue
			}
		case <-retryC:
			retry = nil
		}
		if len(pending) == 0 {
			continue
		}
		rep := &api.MachineReport{}
		for _, r := range pending {
			rep.Workspaces = append(rep.Workspaces, r)
		}
		if err := src.report(ctx, rep); err != nil {
			fails++
			a.logf("agent: reporting to coord: %v", err)
			retry = time.NewTimer(backoff(fails))
			continue
		}
		fails = 0
		for n, r := range pending {
			sent[n] = r
			delete(pending, n)
		}
	}
}

// drain takes whatever else is queued, without waiting.
func drain(reports <-chan api.WorkspaceReport, add func(api.WorkspaceReport)) {
	for {
		select {
		case r := <-reports:
			add(r)
		default:
			return
		}
	}
}

// backoff is the wait after n consecutive failures: 0.5 s doubling up to 30 s.
func backoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	return min(500*time.Millisecond<<min(n-1, 6), 30*time.Second)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
