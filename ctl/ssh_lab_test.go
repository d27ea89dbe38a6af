package ctl

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshwork.dev/coord/api"
)

// staticTools is a directory with a static meshctl for workspaces' sftp subsystem (the test
// binary that plays meshctl in labs is linked with the race detector's C runtime).
func staticTools(t testing.TB) string {
	dir := t.TempDir()
	if _, err := goBuild(dir, "meshwork.dev/ctl/meshctl"); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // the workspace user runs it
	return dir
}

// sshRun runs a command on the laptop and returns stdout, stderr and the exit code.
func sshRun(lp *laptop, stdin io.Reader, name string, args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := lp.host.Command(ctx, name, args...)
	cmd.Env = append(os.Environ(), "MESHCTL_SOCKET="+filepath.Join(lp.state, "meshctl.sock"),
		"XDG_CONFIG_HOME="+filepath.Join(lp.state, "config")) // meshctl ssh's known_hosts
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), code
}

// TestSSH: from a laptop on the mesh, the real OpenSSH client reaches a workspace by name
// with no keys (the mesh identity is the credential): commands keep their exit status and
// stderr, an interactive PTY session is recorded and replays, scp round-trips 10 MB, -L
// reaches a server inside the workspace, and another user's laptop is refused.
func TestSSH(t *testing.T) {
	importEchoImage(t)
	ml := newMeshLab(t)
	wm := &workmachine{name: "wm1", host: ml.in.PublicHost("wm1"), state: filepath.Join(t.TempDir(), "wm1"), ml: ml}
	wm.proc = wm.host.StartShared(nil, ml.meshctl, "node", "--coord", ml.coord.url(), "--auth-key", ml.wmKey,
		"--state", wm.state, "--hostname", "wm1", "--tools", staticTools(t),
		"--shield-failures", "3", "--shield-window", "1m", "--shield-block", "1m")
	t.Cleanup(func() { wm.removeAll(t) })
	lp := ml.laptop(t, "lp", ml.in.PublicHost("lp"))
	ml.mustCtl(ml.coord, "ws", "create", "api", "--machine", "wm1", "--image", echoImage)
	admin := []string{"--coord", ml.coord.url(), "--token", ml.token}

	// A command line, given to the login shell as OpenSSH gives it: its exit status and
	// stderr come back as they were.
	var out, errOut string
	var code int
	eventually(t, 30*time.Second, "meshctl ssh api", func() error {
		out, errOut, code = sshRun(lp, nil, ml.meshctl, append(admin, "ssh", "api", "--", "echo out; echo err >&2; exit 3")...)
		if code == 255 {
			return fmt.Errorf("ssh failed: %s", errOut)
		}
		return nil
	})
	if out != "out\n" || !strings.Contains(errOut, "err") || strings.Contains(out, "err") || code != 3 {
		t.Errorf("ssh api -- 'echo out; echo err >&2; exit 3': stdout %q, stderr %q, exit %d", out, errOut, code)
	}

	// A name that is nothing on the mesh: one clear line, none of OpenSSH's noise after it.
	_, errOut, code = sshRun(lp, nil, ml.meshctl, append(admin, "ssh", "nosuchws", "--", "true")...)
	if code == 0 || !strings.Contains(errOut, `no workspace or machine called "nosuchws"`) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Errorf("ssh nosuchws: exit %d, stderr %q; want one line naming it", code, errOut)
	}

	// Plain ssh with the config meshctl writes.
	cfg, _, code := sshRun(lp, nil, ml.meshctl, append(admin, "ssh-config")...)
	if code != 0 || !strings.Contains(cfg, "Host api api.mesh.internal") {
		t.Fatalf("ssh-config (exit %d):\n%s", code, cfg)
	}
	cfgPath := filepath.Join(lp.state, "ssh_config")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ssh := func(stdin io.Reader, args ...string) (string, string, int) {
		return sshRun(lp, stdin, "ssh", append([]string{"-F", cfgPath, "-o", "BatchMode=yes"}, args...)...)
	}
	if out, errOut, code := ssh(nil, "api", "id -un; hostname; pwd"); code != 0 || out != "admin\napi\n/home/admin\n" {
		t.Errorf("plain ssh api: %q %q exit %d", out, errOut, code)
	}
	// A shell a signal ends: the workspace sends exit-signal and no exit status, as OpenSSH's
	// sshd does, so OpenSSH's client exits 255 (an exit status of 143 would say it exited).
	if out, errOut, code := ssh(nil, "api", "kill -TERM $$"); code != 255 {
		t.Errorf("ssh api 'kill -TERM $$': %q %q exit %d, want 255 as against OpenSSH's sshd", out, errOut, code)
	}

	// An interactive session on a PTY, typed in; then its recording replays what was typed.
	out, errOut, code = ssh(strings.NewReader("echo $((6 * 7))\nexit 0\n"), "-tt", "api")
	if code != 0 || !strings.Contains(out, "42") || !strings.Contains(out, "$ ") {
		t.Errorf("ssh -tt api: %q %q exit %d", out, errOut, code)
	}
	var recs []api.Recording
	eventually(t, 20*time.Second, "the session's recording in coord", func() error {
		if err := json.Unmarshal([]byte(ml.mustCtl(ml.coord, "ssh", "recordings", "--ws", "api", "--json")), &recs); err != nil {
			return err
		}
		if len(recs) == 0 {
			return errors.New("none yet")
		}
		return nil
	})
	if replay := ml.mustCtl(ml.coord, "ssh", "play", recs[0].ID, "--speed", "1000"); !strings.Contains(replay, "42") || !strings.Contains(replay, "6 * 7") {
		t.Errorf("replay of %s lacks the typed command and its output:\n%s", recs[0].ID, replay)
	}

	// ssh -A: the laptop's agent is at $SSH_AUTH_SOCK inside the workspace.
	agentSock := filepath.Join(lp.state, "agent.sock")
	lp.host.Start(nil, "ssh-agent", "-D", "-a", agentSock)
	eventually(t, 10*time.Second, "ssh-agent", func() error { _, err := os.Stat(agentSock); return err })
	out, errOut, code = sshRun(lp, nil, "env", "SSH_AUTH_SOCK="+agentSock, "ssh", "-F", cfgPath, "-o", "BatchMode=yes", "-A", "api",
		`test -S "$SSH_AUTH_SOCK" && echo forwarded to $SSH_AUTH_SOCK`)
	if code != 0 || !strings.HasPrefix(out, "forwarded to /run/meshwork/agent-") {
		t.Errorf("ssh -A api: %q %q exit %d", out, errOut, code)
	}

	// scp of 10 MB there and back, byte for byte.
	blob := make([]byte, 10<<20)
	rand.Read(blob)
	src, back := filepath.Join(lp.state, "blob"), filepath.Join(lp.state, "blob.back")
	os.WriteFile(src, blob, 0o600)
	start := time.Now()
	if _, errOut, code := sshRun(lp, nil, "scp", "-F", cfgPath, "-o", "BatchMode=yes", src, "api:blob"); code != 0 {
		t.Fatalf("scp to api: exit %d: %s", code, errOut)
	}
	if _, errOut, code := sshRun(lp, nil, "scp", "-F", cfgPath, "-o", "BatchMode=yes", "api:blob", back); code != 0 {
		t.Fatalf("scp from api: exit %d: %s", code, errOut)
	}
	t.Logf("scp 10 MB there and back: %v", time.Since(start).Round(time.Millisecond))
	if got, _ := os.ReadFile(back); !bytes.Equal(got, blob) {
		t.Errorf("scp round trip changed the file (%d bytes back)", len(got))
	}

	// -L: a port on the laptop reaches the server inside the workspace.
	fwd := lp.host.Command(context.Background(), "ssh", "-F", cfgPath, "-o", "BatchMode=yes", "-N", "-L", "127.0.0.1:18080:localhost:8080", "api")
	if err := fwd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fwd.Process.Kill(); fwd.Wait() })
	eventually(t, 20*time.Second, "ssh -L to the workspace's server", func() error {
		return wsGreeting(lp.host, "127.0.0.1:18080", "api")
	})

	// Another user's laptop is refused.
	ml.mustCtl(ml.coord, "user", "create", "bob")
	var bobKey api.NewAPIKey
	json.Unmarshal([]byte(ml.mustCtl(ml.coord, "apikey", "create", "--user", "bob", "--json")), &bobKey)
	var bobAuth api.NewAuthKey
	out, errOut, code = sshRun(lp, nil, ml.meshctl, "--coord", ml.coord.url(), "--token", bobKey.Key, "authkey", "create", "--json")
	if err := json.Unmarshal([]byte(out), &bobAuth); err != nil {
		t.Fatalf("bob's auth key: %v: %s %s", err, out, errOut)
	}
	bob := (&meshLab{coordLab: ml.coordLab, in: ml.in, coord: ml.coord, key: bobAuth.Key}).laptop(t, "bobs", ml.in.PublicHost("bobs"))
	bobSSH := func() (string, int) {
		_, errOut, code := sshRun(bob, nil, ml.meshctl, "ssh", "api", "--", "true")
		return errOut, code
	}
	for i := range 3 {
		if errOut, code := bobSSH(); code == 0 || !strings.Contains(errOut, "Permission denied") {
			t.Errorf("bob's ssh %d into admin's workspace: exit %d, %q", i+1, code, errOut)
		}
	}

	// Three failures within the window: the shield blocks bob's address (nftables drops his
	// SSH to the machine's workspaces); the admin sees and lifts the block.
	start = time.Now()
	if errOut, code := bobSSH(); code == 0 || strings.Contains(errOut, "Permission denied") {
		t.Errorf("bob's fourth try reached the SSH server: exit %d, %q", code, errOut)
	}
	t.Logf("bob's blocked try gave up after %v", time.Since(start).Round(time.Millisecond))
	out, errOut, code = sshRun(lp, nil, ml.meshctl, "node", "shield", "list", "wm1")
	if code != 0 || !strings.Contains(out, bob.host.Addr(ml.in.Net).String()) && !strings.Contains(out, "100.64.") {
		t.Errorf("node shield list wm1 (exit %d): %s %s", code, out, errOut)
	}
	t.Logf("node shield list wm1:\n%s", out)
	if _, errOut, code := sshRun(lp, nil, ml.meshctl, "node", "shield", "unblock", "wm1", firstField(out)); code != 0 {
		t.Errorf("node shield unblock: exit %d: %s", code, errOut)
	}
	if errOut, code := bobSSH(); !strings.Contains(errOut, "Permission denied") {
		t.Errorf("after unblock, bob's ssh: exit %d, %q (want the server's refusal again)", code, errOut)
	}
	// A policy whose ssh rules grant bob api lets him in.
	pol := filepath.Join(t.TempDir(), "policy.hujson")
	os.WriteFile(pol, []byte(`{
		"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
		"ssh": [{"action": "accept", "src": ["bob"], "dst": ["api"], "users": ["admin"]}],
	}`), 0o600)
	ml.mustCtl(ml.coord, "policy", "set", pol)
	eventually(t, 20*time.Second, "bob in, by the policy", func() error {
		out, errOut, code := sshRun(bob, nil, ml.meshctl, "ssh", "admin@api", "--", "id", "-un")
		if code != 0 || out != "admin\n" {
			return fmt.Errorf("exit %d: %q %q", code, out, errOut)
		}
		return nil
	})

	// The audit log says why: bob is known (by his mesh identity) and not the owner.
	if audit := ml.mustCtl(ml.coord, "audit"); !strings.Contains(audit, "ssh.block") || !strings.Contains(audit, "bob") || !strings.Contains(audit, "not api's owner") {
		t.Errorf("the audit log lacks the shield's block of bob, and why:\n%s", audit)
	}
	if audit := ml.mustCtl(ml.coord, "audit"); !strings.Contains(audit, "ssh.end") {
		t.Errorf("the audit log lacks the sessions' ends:\n%s", audit)
	}
}

// firstField is the first column of a table's first data row.
func firstField(table string) string {
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) < 2 {
		return ""
	}
	return strings.Fields(lines[1])[0]
}
