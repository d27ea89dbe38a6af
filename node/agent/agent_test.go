package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/wsexec"
)

// fakeRuntime keeps workspaces in memory. Images named "bad" fail to run.
type fakeRuntime struct {
	dir  string
	mu   sync.Mutex
	ws   map[string]ctrd.Status
	runs map[string]int
}

var _ Runtime = (*fakeRuntime)(nil)

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{ws: map[string]ctrd.Status{}, runs: map[string]int{}}
}

func (f *fakeRuntime) Run(ctx context.Context, s ctrd.Spec, progress func(ctrd.Status)) (ctrd.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.Image == "bad" {
		return ctrd.Status{}, fmt.Errorf("image %q: not found", s.Image)
	}
	if st, ok := f.ws[s.Name]; ok && st.State == ctrd.StateRunning {
		return st, nil // adopted, not restarted
	}
	progress(ctrd.Status{Name: s.Name, State: ctrd.StateStarting})
	f.runs[s.Name]++
	st := ctrd.Status{Name: s.Name, State: ctrd.StateRunning, PID: 1000 + f.runs[s.Name]}
	f.ws[s.Name] = st
	return st, nil
}

func (f *fakeRuntime) Stop(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ws[name] = ctrd.Status{Name: name, State: ctrd.StateStopped}
	return nil
}

func (f *fakeRuntime) Delete(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ws, name)
	return nil
}

func (f *fakeRuntime) List(ctx context.Context) ([]ctrd.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ctrd.Status
	for _, s := range f.ws {
		out = append(out, s)
	}
	return out, nil
}

func (f *fakeRuntime) get(name string) (ctrd.Status, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.ws[name]
	return s, ok
}

// fakeCoord hands out desired states and records reports. Its first report fails, as a
// replica dying mid-request would.
type fakeCoord struct {
	mu      sync.Mutex
	st      api.MachineState
	changed chan struct{}
	reports map[string]api.WorkspaceReport
	svcs    map[string]api.ServiceReport // by env/name
	failed  bool
}

func newFakeCoord() *fakeCoord {
	return &fakeCoord{st: api.MachineState{Index: 1, Machine: "wm1", Domain: "mesh.internal"},
		changed: make(chan struct{}), reports: map[string]api.WorkspaceReport{}, svcs: map[string]api.ServiceReport{}}
}

func (c *fakeCoord) set(ws ...api.WorkspaceSpec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Index++
	c.st.Workspaces = ws
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *fakeCoord) state(ctx context.Context, last *api.MachineState) (*api.MachineState, error) {
	c.mu.Lock()
	st, ch := c.st, c.changed
	c.mu.Unlock()
	if last != nil && last.Index >= st.Index {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c.mu.Lock()
		st = c.st
		c.mu.Unlock()
	}
	return &st, nil
}

func (c *fakeCoord) report(ctx context.Context, rep *api.MachineReport) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.failed {
		c.failed = true
		return errors.New("replica went away")
	}
	for _, r := range rep.Workspaces {
		c.reports[r.Name] = r
	}
	for _, r := range rep.Services {
		c.svcs[r.Env+"/"+r.Name] = r
	}
	return nil
}

func (c *fakeCoord) reported(name string) api.WorkspaceReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reports[name]
}

func spec(name, image, desired string) api.WorkspaceSpec {
	return api.WorkspaceSpec{ID: "w_" + name, Name: name, User: "alice", Image: image, IPv4: fmt.Sprintf("100.64.0.%d", len(name)), Desired: desired}
}

// eventually waits up to 5 s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startAgent(t *testing.T, rt Runtime, c *fakeCoord) (routes func() []netip.Prefix) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var adv []netip.Prefix
	a := &agent{newRuntime: func(string) (Runtime, error) { return rt, nil }, Config: Config{Resync: 50 * time.Millisecond, Logf: t.Logf}}
	done := make(chan error, 1)
	go func() {
		done <- a.run(ctx, c, func(_ context.Context, p []netip.Prefix) error {
			mu.Lock()
			defer mu.Unlock()
			adv = p
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	return func() []netip.Prefix {
		mu.Lock()
		defer mu.Unlock()
		return adv
	}
}

func TestAgentReconciles(t *testing.T) {
	rt, c := newFakeRuntime(), newFakeCoord()
	rt.ws["orphan"] = ctrd.Status{Name: "orphan", State: ctrd.StateRunning, PID: 7}
	rt.ws["kept"] = ctrd.Status{Name: "kept", State: ctrd.StateRunning, PID: 42}
	c.set(spec("kept", "img", api.Running), spec("api", "img", api.Running), spec("broken", "bad", api.Running))
	routes := startAgent(t, rt, c)

	eventually(t, "api running and reported", func() bool { return c.reported("api").State == "running" })
	eventually(t, "the orphan removed", func() bool { _, ok := rt.get("orphan"); return !ok })
	if st, _ := rt.get("kept"); st.PID != 42 {
		t.Errorf("adopted workspace restarted: pid %d, want 42", st.PID)
	}
	eventually(t, "broken reported failed", func() bool { return c.reported("broken").State == "failed" })
	if r := c.reported("broken").Reason; r == "" {
		t.Errorf("failure reported without a reason")
	}
	eventually(t, "routes advertised", func() bool { return len(routes()) == 3 })

	c.set(spec("kept", "img", api.Running), spec("api", "img", api.Stopped))
	eventually(t, "api stopped", func() bool { return c.reported("api").State == "stopped" })
	eventually(t, "broken removed", func() bool { _, ok := rt.get("broken"); return !ok })
	c.set(spec("kept", "img", api.Running), spec("api", "img", api.Running))
	eventually(t, "api running again", func() bool { st, _ := rt.get("api"); return st.State == ctrd.StateRunning })
	c.set()
	eventually(t, "everything removed", func() bool { l, _ := rt.List(context.Background()); return len(l) == 0 })
	eventually(t, "routes withdrawn", func() bool { return len(routes()) == 0 })
}

func (f *fakeRuntime) LogPath(name string) string { return filepath.Join(f.dir, name+".log") }

func (f *fakeRuntime) Exec(ctx context.Context, name string, s wsexec.Spec) (wsexec.Process, error) {
	return nil, errors.New("the fake runs nothing")
}

func (c *fakeCoord) session(ctx context.Context, rep *api.SessionReport) error { return nil }

func (f *fakeRuntime) SocketDir(name string) string { return filepath.Join(f.dir, name) }
