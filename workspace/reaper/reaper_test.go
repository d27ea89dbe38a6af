package reaper_test

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"meshwork.dev/workspace/reaper"
)

// childEnv makes the test binary the reaper (a subreaper, as pid 1 of a container is a reaper).
const childEnv = "REAPER_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			os.Exit(99)
		}
		os.Exit(reaper.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// reaperCmd is the test binary as the reaper running args.
func reaperCmd(t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(t.Context(), os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	return cmd
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if err == nil {
		return 0
	}
	if !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return ee.ExitCode()
}

func TestExitCode(t *testing.T) {
	for script, want := range map[string]int{"exit 0": 0, "exit 3": 3, "kill -KILL $$": 137} {
		if got := exitCode(t, reaperCmd(t, "/bin/sh", "-c", script).Run()); got != want {
			t.Errorf("%s: exit %d, want %d", script, got, want)
		}
	}
	if got := exitCode(t, reaperCmd(t, "/no/such/command").Run()); got != 127 {
		t.Errorf("a command that is not there: exit %d, want 127", got)
	}
}

// TestForwardsSignals sends SIGTERM to the reaper: the child gets it and dies of it.
func TestForwardsSignals(t *testing.T) {
	cmd := reaperCmd(t, "sleep", "100")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	if got := exitCode(t, cmd.Wait()); got != 128+int(syscall.SIGTERM) {
		t.Errorf("exit %d, want %d (the child ended by SIGTERM)", got, 128+int(syscall.SIGTERM))
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

// TestReapsOrphans leaves an orphan to the reaper and checks, from the child, that it does
// not stay a zombie of the reaper's.
func TestReapsOrphans(t *testing.T) {
	script := `(sleep 0.1 &); sleep 1
for s in /proc/[0-9]*/status; do
	if grep -q "^PPid:[[:space:]]*$PPID\$" $s 2>/dev/null && grep -q "^State:[[:space:]]*Z" $s 2>/dev/null; then exit 9; fi
done`
	if got := exitCode(t, reaperCmd(t, "/bin/sh", "-c", script).Run()); got != 0 {
		t.Errorf("exit %d, want 0 (9: a zombie left)", got)
	}
}
