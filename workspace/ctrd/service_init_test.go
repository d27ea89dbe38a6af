package ctrd_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshwork.dev/workspace/ctrd"
)

// TestServiceInit runs a service with init: true: the reaper from the tools mount is pid 1,
// reaps orphans (with sleep as pid 1 they would stay zombies) and hands SIGTERM on.
func TestServiceInit(t *testing.T) {
	e := newSvcEnv(t)
	s := svcSpec("worker", 40)
	s.Service.Init = true
	s.Service.Command = []string{"sleep", "1000"}
	if err := e.host.Do(func() error { _, err := e.rt.RunService(e.ctx(), s, nil); return err }); err == nil || !strings.Contains(err.Error(), "Runtime.Tools") {
		t.Errorf("init without Runtime.Tools: %v, want an error naming it", err)
	}
	e.rt.Tools = t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(e.rt.Tools, "meshctl"), "./testdata/initmeshctl")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the reaper: %v: %s", err, out)
	}
	e.run(s)

	if got := e.sh(s.ID, "tr '\\0' ' ' < /proc/1/cmdline"); got != ctrd.ToolsPath+"/meshctl _init -- sleep 1000" {
		t.Errorf("pid 1 runs %q, want the reaper running sleep", got)
	}
	e.sh(s.ID, "(sleep 0.1 &)") // an orphan, reparented to pid 1
	time.Sleep(time.Second)
	if got := e.sh(s.ID, "ps -o stat | grep -c '^Z' || true"); got != "0" {
		t.Errorf("%s zombies left, want 0", got)
	}
	if err := e.rt.StopService(e.ctx(), s.ID); err != nil {
		t.Fatal(err)
	}
	if code, err := e.rt.WaitService(context.Background(), s.ID); err != nil || code != 143 {
		t.Errorf("exit code %d, %v; want 143 (sleep ended by the SIGTERM handed on, not SIGKILL after the grace)", code, err)
	}
}
