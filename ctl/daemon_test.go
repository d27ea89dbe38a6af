package ctl

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshwork.dev/node"
)

// TestOneDaemonPerState: a second daemon on a state directory in use refuses it, naming the
// first, which goes on serving; and up waits for a daemon that holds its state directory
// but does not serve yet, instead of starting another beside it.
func TestOneDaemonPerState(t *testing.T) {
	meshctl, err := exec.LookPath("meshctl")
	if err != nil {
		t.Fatal(err)
	}
	daemon := func(state string) *exec.Cmd {
		return exec.Command(meshctl, "daemon", "--state", state, "--userspace", "--socks5", "")
	}
	state := t.TempDir()
	first := daemon(state)
	var firstOut bytes.Buffer
	first.Stdout, first.Stderr = &firstOut, &firstOut
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		first.Process.Kill()
		first.Wait()
	})
	daemonUp(t, state)

	out, err := daemon(state).CombinedOutput()
	want := fmt.Sprintf("another daemon (pid %d) is using %s: stop it first, or pass another --state", first.Process.Pid, state)
	if err == nil || !strings.Contains(string(out), want) {
		t.Errorf("a second daemon on the same state: %v, %q; want an error saying %q", err, out, want)
	}
	if out, err := exec.Command(meshctl, "status", "--state", state).CombinedOutput(); err != nil {
		t.Errorf("the first daemon after the second was refused: status: %v: %s\nits output: %s", err, out, firstOut.String())
	}

	// This test holds the directory as a starting daemon would, before it serves.
	starting := t.TempDir()
	lock, err := node.LockState(starting)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, _ = exec.CommandContext(ctx, meshctl, "up", "--state", starting, "--coord", "http://127.0.0.1:1", "--auth-key", "ak_x").CombinedOutput()
	want = fmt.Sprintf("waiting for the daemon (pid %d) using %s", os.Getpid(), starting)
	if !strings.Contains(string(out), want) || strings.Contains(string(out), "started the daemon") {
		t.Errorf("up beside a starting daemon said %q; want it to wait (%q) and start none", out, want)
	}
	if _, err := os.Stat(filepath.Join(starting, "daemon.log")); err == nil {
		t.Errorf("up started a daemon beside the one starting (it wrote %s)", filepath.Join(starting, "daemon.log"))
	}
}
