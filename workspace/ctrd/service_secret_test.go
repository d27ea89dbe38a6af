package ctrd_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshwork.dev/workspace/compose"
	"meshwork.dev/workspace/ctrd"
)

// TestServiceSecrets checks that a secret is in the service at /run/secrets/NAME, 0400 and
// its user's, on a tmpfs outside Runtime.Dir, that its bytes are nowhere under Runtime.Dir,
// and that DeleteService unmounts and removes it. Configs land at their targets, 0444.
func TestServiceSecrets(t *testing.T) {
	e := newSvcEnv(t)
	secret := "s3cret-" + randHex(8)
	s := svcSpec("db", 20)
	s.Service.User = "nobody"
	s.Service.Secrets = []compose.File{
		{Name: "token", Content: compose.Sensitive(secret)},
		{Name: "other", Target: "/etc/other.key", Mode: 0o440, UID: "0", GID: "65534", Content: compose.Sensitive(secret + "-2")},
	}
	s.Service.Configs = []compose.File{{Name: "app.conf", Content: compose.Sensitive("x=1\n")}}
	e.run(s)

	for script, want := range map[string]string{
		"stat -c '%a %u %g' /run/secrets/token; cat /run/secrets/token": "400 65534 65534\n" + secret,
		"stat -c '%a %u %g' /etc/other.key; cat /etc/other.key":         "440 0 65534\n" + secret + "-2",
		"stat -c '%a %u %g' /app.conf; cat /app.conf":                   "444 65534 65534\nx=1",
		"(echo x > /run/secrets/token) 2>/dev/null || echo read-only":   "read-only",
	} {
		if got := e.sh(s.ID, script); got != want {
			t.Errorf("%s = %q, want %q", script, got, want)
		}
	}
	if n := filesHolding(t, e.rt.Dir, secret); len(n) > 0 {
		t.Errorf("the secret is on disk under Runtime.Dir: %v", n)
	}
	if !mountedAt(t, e.rt.SecretsDir) {
		t.Fatalf("no tmpfs under %s", e.rt.SecretsDir)
	}
	if err := e.host.Do(func() error { return e.rt.DeleteService(context.Background(), s.ID) }); err != nil {
		t.Fatal(err)
	}
	if mountedAt(t, e.rt.SecretsDir) {
		t.Errorf("a tmpfs under %s outlived DeleteService", e.rt.SecretsDir)
	}
	if ents, err := os.ReadDir(e.rt.SecretsDir); err != nil || len(ents) != 0 {
		t.Errorf("%s after DeleteService: %v, %v; want empty", e.rt.SecretsDir, ents, err)
	}
}

// filesHolding walks dir and returns the files containing s.
func filesHolding(t *testing.T, dir, s string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(s)) {
			found = append(found, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// mountedAt reports whether anything is mounted under dir.
func mountedAt(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), " "+dir+"/")
}

// TestServiceExec runs healthcheck-like commands: exit codes, output cut to 4 KiB, a timeout
// that kills, and a stopped service refused.
func TestServiceExec(t *testing.T) {
	e := newSvcEnv(t)
	s := svcSpec("web", 21)
	s.Service.Environment = map[string]string{"WHO": "svc"}
	e.run(s)
	code, out, err := e.rt.ExecService(e.ctx(), s.ID, []string{"/bin/sh", "-c", "echo $WHO; sleep 0.3; echo oops >&2; exit 7"}, 5*time.Second)
	if err != nil || code != 7 || string(out) != "svc\noops\n" {
		t.Errorf("exit 7: %d, %q, %v", code, out, err)
	}
	code, out, err = e.rt.ExecService(e.ctx(), s.ID, []string{"/bin/sh", "-c", "yes | head -c 100000"}, 5*time.Second)
	if err != nil || code != 0 || len(out) != ctrd.ExecOutputMax {
		t.Errorf("long output: %d, %d bytes, %v; want 0 and %d bytes", code, len(out), err, ctrd.ExecOutputMax)
	}
	t0 := time.Now()
	_, _, err = e.rt.ExecService(e.ctx(), s.ID, []string{"sleep", "30"}, 500*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 10*time.Second {
		t.Errorf("timeout: %v after %v; want DeadlineExceeded soon", err, time.Since(t0))
	}
	if got := e.sh(s.ID, "ps -o comm | grep -c '^sleep$' || true"); got != "0" {
		t.Errorf("the timed-out sleep still runs: %s", got)
	}
	if err := e.rt.StopService(e.ctx(), s.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.rt.ExecService(e.ctx(), s.ID, []string{"true"}, time.Second); !errors.Is(err, ctrd.ErrNotRunning) {
		t.Errorf("exec in a stopped service: %v, want ErrNotRunning", err)
	}
}
