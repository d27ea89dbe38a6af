package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	"meshwork.dev/coord/api"
)

// gateSource holds each report until the test lets it through.
type gateSource struct {
	entered chan struct{} // a report is waiting at the gate
	gate    chan struct{}
	mu      sync.Mutex
	got     []*api.MachineReport
}

func (g *gateSource) state(ctx context.Context, last *api.MachineState) (*api.MachineState, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (g *gateSource) report(ctx context.Context, rep *api.MachineReport) error {
	g.entered <- struct{}{}
	<-g.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	g.got = append(g.got, rep)
	return nil
}

func (g *gateSource) session(ctx context.Context, rep *api.SessionReport) error { return nil }

func (g *gateSource) reports() []*api.MachineReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*api.MachineReport(nil), g.got...)
}

// A change that goes back to what coord has while a report is on its way must not leave
// coord with the change in between.
func TestReporterSendsOnlyTheLatest(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{Config: Config{Logf: t.Logf}}
	src := &gateSource{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	ws, svcs := make(chan api.WorkspaceReport, 8), make(chan api.ServiceReport, 8)
	a.wg.Add(1)
	go a.reporter(ctx, src, ws, svcs, nil)
	defer func() { cancel(); close(src.gate); a.wg.Wait() }()

	running := api.ServiceReport{Env: "staging", Name: "redis", State: api.ServiceRunning}
	svcs <- running
	<-src.entered // the first report (running) is on its way; meanwhile redis restarts
	svcs <- api.ServiceReport{Env: "staging", Name: "redis", State: api.ServiceRestarting}
	svcs <- running
	ws <- api.WorkspaceReport{Name: "dev", State: "running"}
	src.gate <- struct{}{}
	<-src.entered
	select {
	case src.gate <- struct{}{}: // ...and the next carries only the workspace
	case <-time.After(5 * time.Second):
		t.Fatal("no second report")
	}
	eventually(t, "the second report", func() bool { return len(src.reports()) == 2 })
	got := src.reports()
	if len(got[0].Services) != 1 || got[0].Services[0] != running {
		t.Fatalf("reports %+v, want redis running first", got)
	}
	if len(got[1].Services) != 0 || len(got[1].Workspaces) != 1 {
		t.Errorf("second report %+v: want the workspace only, redis is as coord has it", got[1])
	}
}
