package ctl

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"meshwork.dev/workspace/ctrd"
)

// TestReadme brings up `make run`'s Meshwork (scripts/demo, with state of its own) and runs
// the README's walkthrough, line by line, as a user would type it in a second terminal: every
// line must succeed, and a few must show what their comments promise.
func TestReadme(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, as make run does")
	}
	if _, err := os.Stat(ctrd.DefaultAddress); err != nil {
		t.Skipf("containerd is not running at %s (run scripts/deps.sh)", ctrd.DefaultAddress)
	}
	lines := walkthrough(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	for _, pkg := range []string{"meshwork.dev/ctl/meshctl", "meshwork.dev/scripts/demo"} {
		if _, err := goBuild(bin, pkg); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(dir, "state")
	startDemo(t, bin, state)

	want := map[string]string{ // a line's start → what its output must hold
		"bin/meshctl node list":                           "demo-wm",
		"bin/meshctl ws list":                             "running",
		"bin/meshctl ssh dev -- uname":                    "dev",
		"bin/meshctl ssh api -- cat":                      "hello",
		"bin/meshctl env status":                          "healthy",
		"bin/meshctl ssh dev -- redis-cli -h redis set":   "OK",
		"bin/meshctl ssh dev -- redis-cli -h redis get":   "hi",
		"bin/meshctl ssh dev -- wget -qO- http://web/":    "hello from web",
		"bin/meshctl ssh dev -- wget -qO- http://web:80/": "hello from dev",
	}
	for _, line := range lines {
		cmdline := strings.ReplaceAll(line, "/var/lib/meshwork/demo", state)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, "bash", "-c", ". "+state+"/env && "+cmdline)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(dir, "config")) // known_hosts
		out, err := cmd.CombinedOutput()
		cancel()
		t.Logf("$ %s\n%s", line, out)
		if err != nil {
			t.Errorf("README line %q: %v", line, err)
		}
		for prefix, s := range want {
			if strings.HasPrefix(line, prefix) && !strings.Contains(string(out), s) {
				t.Errorf("README line %q: output lacks %q", line, s)
			}
		}
	}
}

// walkthrough is the first sh block after the README's "Five minutes" heading, a command a line.
func walkthrough(t *testing.T) []string {
	f, err := os.Open("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	section, in := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "## Five minutes"):
			section = true
		case section && l == "```sh":
			in = true
		case in && l == "```":
			return lines
		case in && strings.TrimSpace(l) != "":
			lines = append(lines, l)
		}
	}
	t.Fatal("README.md has no walkthrough (a sh block under ## Five minutes)")
	return nil
}

// startDemo runs make run's program with its own state and any free port for the admin API,
// until the test ends.
func startDemo(t *testing.T, bin, state string) {
	cmd := exec.Command(filepath.Join(bin, "demo"), "-meshctl", filepath.Join(bin, "meshctl"), "-state", state, "-listen", "127.0.0.1:0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			t.Errorf("make run did not stop within a minute of SIGTERM")
		}
		if log, err := os.ReadFile(filepath.Join(state, "demo.log")); err == nil && t.Failed() {
			t.Logf("demo.log:\n%s", log)
		}
	})
	up := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			t.Logf("make run: %s", sc.Text())
			if strings.HasPrefix(sc.Text(), "Meshwork is up") {
				up <- nil
			}
		}
		up <- fmt.Errorf("make run ended before it was up")
	}()
	select {
	case err := <-up:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("make run was not up within 3 minutes")
	}
}
