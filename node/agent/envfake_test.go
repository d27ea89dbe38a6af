package agent

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"meshwork.dev/workspace/ctrd"
)

// fakeServices keeps environment services in memory. By image: "bad" cannot be had;
// "job-exit-N" exits with code N 20 ms after it starts; any other runs until killed.
type fakeServices struct {
	dir string

	mu       sync.Mutex
	svcs     map[string]*fakeSvc
	starts   map[string]int // tasks started, by service ID
	creates  map[string]int // containers made (new, or recreated for another hash)
	volumes  map[string]bool
	volDels  []string
	allows   map[string][]netip.Prefix
	hosts    map[string][]ctrd.HostEntry
	peersSet map[string]int // SetServicePeers calls by ID
	searches map[string][]string
	order    []string // service IDs in the order their tasks started
	execs    [][]string
	health   func(id string) (int, string, error) // healthcheck answers; nil: pass
	missing  map[string]bool                      // images that cannot be had for now
}

type fakeSvc struct {
	st   ctrd.ServiceStatus
	spec ctrd.ServiceSpec
	done chan struct{} // closed when the running task exits
}

var _ Services = (*fakeServices)(nil)

func newFakeServices(dir string) *fakeServices {
	return &fakeServices{dir: dir, svcs: map[string]*fakeSvc{}, starts: map[string]int{}, creates: map[string]int{},
		volumes: map[string]bool{}, allows: map[string][]netip.Prefix{}, peersSet: map[string]int{}, hosts: map[string][]ctrd.HostEntry{}, searches: map[string][]string{}, missing: map[string]bool{}}
}

func (f *fakeServices) RunService(ctx context.Context, s ctrd.ServiceSpec, progress func(ctrd.Status)) (ctrd.ServiceStatus, error) {
	progress(ctrd.Status{State: ctrd.StatePulling, Reason: "resolving " + s.Service.Image})
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.Service.Image == "bad" || f.missing[s.Service.Image] {
		return ctrd.ServiceStatus{}, fmt.Errorf("image %q: not found", s.Service.Image)
	}
	sv := f.svcs[s.ID]
	if sv != nil && sv.st.Hash == s.Hash && sv.st.State == ctrd.StateRunning {
		return sv.st, nil // adopted, never restarted
	}
	if sv == nil || sv.st.Hash != s.Hash {
		if sv != nil {
			f.exitLocked(sv, 137)
		}
		f.creates[s.ID]++
		sv = &fakeSvc{st: ctrd.ServiceStatus{ID: s.ID, Env: s.Env, EnvID: s.EnvID, Name: s.Service.Name, Hash: s.Hash}}
		f.svcs[s.ID] = sv
	}
	sv.spec = s
	f.volumes[s.EnvID] = true
	f.allows[s.ID], f.hosts[s.ID] = s.Allow, s.Hosts
	f.starts[s.ID]++
	f.order = append(f.order, s.ID)
	sv.st.State, sv.st.PID, sv.st.ExitCode = ctrd.StateRunning, 1000+f.starts[s.ID], 0
	done := make(chan struct{})
	sv.done = done
	if code, ok := strings.CutPrefix(s.Service.Image, "job-exit-"); ok {
		n, _ := strconv.Atoi(code)
		time.AfterFunc(20*time.Millisecond, func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			if sv.done == done {
				f.exitLocked(sv, n)
			}
		})
	}
	return sv.st, nil
}

// exitLocked ends sv's running task with code.
func (f *fakeServices) exitLocked(sv *fakeSvc, code int) {
	if sv.st.State != ctrd.StateRunning {
		return
	}
	sv.st.State, sv.st.ExitCode, sv.st.PID = ctrd.StateStopped, code, 0
	close(sv.done)
}

// kill makes service id's task exit with code, as its process dying would.
func (f *fakeServices) kill(id string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sv := f.svcs[id]; sv != nil {
		f.exitLocked(sv, code)
	}
}

func (f *fakeServices) WaitService(ctx context.Context, id string) (int, error) {
	f.mu.Lock()
	sv := f.svcs[id]
	if sv == nil {
		f.mu.Unlock()
		return 0, fmt.Errorf("service %s: %w", id, ctrd.ErrNotFound)
	}
	if sv.st.State != ctrd.StateRunning {
		defer f.mu.Unlock()
		return sv.st.ExitCode, nil
	}
	done := sv.done
	f.mu.Unlock()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-done:
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return sv.st.ExitCode, nil
}

func (f *fakeServices) ExecService(ctx context.Context, id string, argv []string, timeout time.Duration) (int, []byte, error) {
	f.mu.Lock()
	f.execs = append(f.execs, argv)
	health := f.health
	f.mu.Unlock()
	if health == nil {
		return 0, []byte("PONG"), nil
	}
	code, out, err := health(id)
	return code, []byte(out), err
}

func (f *fakeServices) StopService(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sv := f.svcs[id]; sv != nil {
		f.exitLocked(sv, 143)
	}
	return nil
}

func (f *fakeServices) DeleteService(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sv := f.svcs[id]; sv != nil {
		f.exitLocked(sv, 137)
		delete(f.svcs, id)
	}
	return nil
}

func (f *fakeServices) DeleteVolumes(ctx context.Context, envID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.volumes, envID)
	f.volDels = append(f.volDels, envID)
	return nil
}

func (f *fakeServices) ListServices(ctx context.Context) ([]ctrd.ServiceStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ctrd.ServiceStatus
	for _, sv := range f.svcs {
		out = append(out, sv.st)
	}
	return out, nil
}

func (f *fakeServices) SetServicePeers(ctx context.Context, id string, hosts []ctrd.HostEntry, allow []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.svcs[id] == nil {
		return fmt.Errorf("service %s: %w", id, ctrd.ErrNotFound)
	}
	f.allows[id], f.hosts[id] = allow, hosts
	f.peersSet[id]++
	return nil
}

func (f *fakeServices) ServiceLogPath(id string) string { return filepath.Join(f.dir, id+".log") }

func (f *fakeServices) SetSearch(ctx context.Context, name string, search []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.searches[name] = search
	return nil
}

// with runs fn under the fake's lock.
func (f *fakeServices) with(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// fakeMachine is a runtime of workspaces and services.
type fakeMachine struct {
	*fakeRuntime
	*fakeServices
}

func newFakeMachine(dir string) *fakeMachine {
	rt := newFakeRuntime()
	rt.dir = dir
	return &fakeMachine{rt, newFakeServices(dir)}
}
