package sshd

import (
	"bytes"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"
)

// openssh runs the real OpenSSH client (ssh, scp) against h, checking the host key through a
// known_hosts file made from Server.HostKey.
type openssh struct {
	t          *testing.T
	h          *harness
	knownHosts string
	host, port string
}

func newOpenSSH(t *testing.T, h *harness) *openssh {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatal("no OpenSSH client: run scripts/deps.sh (apt-get install openssh-client)")
	}
	host, port, _ := net.SplitHostPort(h.addr)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(h.addr)}, h.hostPK)
	if err := os.WriteFile(kh, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &openssh{t: t, h: h, knownHosts: kh, host: host, port: port}
}

func (o *openssh) opts() []string {
	return []string{"-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + o.knownHosts,
		"-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"}
}

// run runs tool with args and returns stdout, stderr and the exit code.
func (o *openssh) run(tool string, args ...string) (string, string, int) {
	o.t.Helper()
	cmd := exec.Command(tool, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + o.t.TempDir()} // no keys, no agent, no config
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		o.t.Fatalf("%s: %v", tool, err)
	}
	return stdout.String(), stderr.String(), code
}

func (o *openssh) ssh(login string, args ...string) (string, string, int) {
	o.t.Helper()
	return o.run("ssh", append(append(o.opts(), "-p", o.port, login+"@"+o.host), args...)...)
}

func TestOpenSSHExecExitCodeAndStderr(t *testing.T) {
	o := newOpenSSH(t, newHarness(t, nil))
	stdout, stderr, code := o.ssh("dev", "--", "sh", "-c", `'echo out; echo err >&2; exit 3'`)
	if code != 3 {
		t.Errorf("exit code %d, want 3 (stderr %q)", code, stderr)
	}
	if stdout != "out\n" || stderr != "err\n" {
		t.Errorf("stdout %q stderr %q, want \"out\\n\" and \"err\\n\"", stdout, stderr)
	}
}

func TestOpenSSHRefusedIdentity(t *testing.T) {
	o := newOpenSSH(t, newHarness(t, nil))
	_, stderr, code := o.ssh("mallory", "true")
	if code != 255 || !strings.Contains(stderr, "Permission denied") {
		t.Errorf("exit code %d, stderr %q: want 255 and Permission denied", code, stderr)
	}
}

func TestOpenSSHPTYLogsInWithAgentForwardingRefused(t *testing.T) {
	o := newOpenSSH(t, newHarness(t, nil))
	stdout, stderr, code := o.ssh("dev", "-tt", "-A", "--", "tty; echo TERM=$TERM")
	if code != 0 || !strings.Contains(stdout, "/dev/pts/") {
		t.Errorf("exit %d, stdout %q, stderr %q: want a terminal", code, stdout, stderr)
	}
	if ev := o.h.endEvent(0); !ev.PTY || ev.Recording == "" {
		t.Errorf("end event %+v: want a recorded PTY session", ev)
	}
}

func TestOpenSSHKilledProcess(t *testing.T) {
	o := newOpenSSH(t, newHarness(t, nil))
	// OpenSSH's sshd sends a signalled process's exit-signal and no exit-status, and its
	// client then exits 255 (checked against a real sshd); we do as it does.
	_, stderr, code := o.ssh("dev", "--", "kill -9 $$")
	if code != 255 {
		t.Errorf("exit code %d (stderr %q), want 255 as against OpenSSH's sshd", code, stderr)
	}
}

func TestOpenSSHScpRoundTripsThroughSFTP(t *testing.T) {
	o := newOpenSSH(t, newHarness(t, nil))
	dir := t.TempDir()
	src := filepath.Join(dir, "src.bin")
	data := make([]byte, 3<<20+17)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	scp := func(from, to string) {
		t.Helper()
		args := append(o.opts(), "-s", "-P", o.port, from, to) // -s: the SFTP protocol
		if _, stderr, code := o.run("scp", args...); code != 0 {
			t.Fatalf("scp %s %s: exit %d: %s", from, to, code, stderr)
		}
	}
	remote := "dev@" + o.host + ":" + filepath.Join(dir, "up.bin")
	scp(src, remote)
	back := filepath.Join(dir, "back.bin")
	scp(remote, back)
	got, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("round trip changed the file: %d bytes back of %d", len(got), len(data))
	}
	if sp := o.h.exec.last(); strings.Join(sp.Args, " ") != strings.Join(SFTPServer, " ") || sp.TTY {
		t.Errorf("sftp ran %q (TTY %v), want %q", sp.Args, sp.TTY, SFTPServer)
	}
	if ev := o.h.endEvent(0); ev.Subsystem != "sftp" || ev.BytesIn < int64(len(data)) {
		t.Errorf("end event %+v: want the sftp subsystem with the upload's bytes in", ev)
	}
}
