package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startRedis runs Debian's redis-server on a free localhost port for the test and returns its
// address; extra are more redis-server arguments.
func startRedis(t *testing.T, port int, extra ...string) string {
	t.Helper()
	started := startRedisAfter(t, 0, port, extra...)
	<-started.done
	if started.err != nil {
		t.Fatal(started.err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// start is a start that may still be to come: err is set when done is closed.
type start struct {
	done chan struct{}
	err  error
}

// startRedisAfter starts redis-server on port after delay; it is stopped when the test ends.
func startRedisAfter(t *testing.T, delay time.Duration, port int, extra ...string) *start {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("envapi: no redis-server: scripts/deps.sh installs it")
	}
	args := append([]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()}, extra...)
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	started := &start{done: make(chan struct{})}
	timer := time.AfterFunc(delay, func() {
		started.err = cmd.Start()
		close(started.done)
	})
	t.Cleanup(func() {
		if timer.Stop() {
			return // never started
		}
		if <-started.done; started.err == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("redis-server output:\n%s", out.String())
		}
	})
	return started
}

// freePort returns a localhost TCP port nothing listens on (for now).
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// runMigrate runs `envapi -migrate args…` and returns its output and error.
func runMigrate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(t.Context(), append([]string{"-migrate"}, args...), &out, &out)
	return out.String(), err
}

func call(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAPIAndMigrate: unset greeting is a 404 saying what to do; the migration sets it once
// and leaves it after; PUT replaces it; healthz answers.
func TestAPIAndMigrate(t *testing.T) {
	addr := startRedis(t, freePort(t))
	out, err := runMigrate(t, "-redis", addr) // also waits for the server to come up
	if err != nil || !strings.Contains(out, `set greeting to "hello from redis"`) {
		t.Fatalf("first migrate: %v, %q", err, out)
	}
	rc := newRedisClient(addr, "")
	defer rc.close()
	srv := httptest.NewServer(newHandler(rc))
	defer srv.Close()
	if code, body := call(t, "GET", srv.URL+"/", ""); code != 200 || body != "hello from redis" {
		t.Errorf("GET / after migrate: %d %q", code, body)
	}
	if code, body := call(t, "PUT", srv.URL+"/greeting", "hi there"); code != 204 {
		t.Errorf("PUT /greeting: %d %q", code, body)
	}
	if code, body := call(t, "GET", srv.URL+"/", ""); code != 200 || body != "hi there" {
		t.Errorf("GET / after PUT: %d %q", code, body)
	}
	out, err = runMigrate(t, "-redis", addr)
	if err != nil || !strings.Contains(out, `already set to "hi there"`) {
		t.Errorf("second migrate: %v, %q", err, out)
	}
	if code, body := call(t, "GET", srv.URL+"/healthz", ""); code != 200 {
		t.Errorf("healthz: %d %q", code, body)
	}
	if _, err := rc.do(t.Context(), "DEL", "greeting"); err != nil {
		t.Fatal(err)
	}
	if code, body := call(t, "GET", srv.URL+"/", ""); code != 404 || !strings.Contains(body, "greeting is not set") || !strings.Contains(body, "-migrate") {
		t.Errorf("GET / unset: %d %q", code, body)
	}
}

// TestPassword: with requirepass, the secret file's password gets in; without it the API
// answers 503 naming the reason and the migration fails at once, not after its wait.
func TestPassword(t *testing.T) {
	addr := startRedis(t, freePort(t), "--requirepass", "s3cret")
	file := filepath.Join(t.TempDir(), "redis_password")
	os.WriteFile(file, []byte("s3cret\n"), 0o400)
	if out, err := runMigrate(t, "-redis", addr, "-redis-password-file", file); err != nil {
		t.Fatalf("migrate with the password: %v, %q", err, out)
	}
	start := time.Now()
	out, err := runMigrate(t, "-redis", addr)
	if err == nil || !strings.Contains(err.Error(), "NOAUTH") || time.Since(start) > 5*time.Second {
		t.Errorf("migrate without the password: %v after %v, %q; want NOAUTH at once", err, time.Since(start), out)
	}
	rc := newRedisClient(addr, "")
	defer rc.close()
	srv := httptest.NewServer(newHandler(rc))
	defer srv.Close()
	if code, body := call(t, "GET", srv.URL+"/healthz", ""); code != 503 || !strings.Contains(body, "NOAUTH") {
		t.Errorf("healthz without the password: %d %q", code, body)
	}
	if _, err := runMigrate(t, "-redis", addr, "-redis-password-file", filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "-redis-password-file") {
		t.Errorf("missing password file: %v", err)
	}
}

// TestMigrateWaitsThenGivesUp: the job waits for a Redis that starts late, and gives up with
// the address when none comes.
func TestMigrateWaitsThenGivesUp(t *testing.T) {
	port := freePort(t)
	startRedisAfter(t, time.Second, port)
	if out, err := runMigrate(t, "-redis", fmt.Sprintf("127.0.0.1:%d", port), "-wait", "20s"); err != nil {
		t.Errorf("migrate with redis starting late: %v, %q", err, out)
	}
	gone := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	_, err := runMigrate(t, "-redis", gone, "-wait", "1s")
	if err == nil || !strings.Contains(err.Error(), gone) || !strings.Contains(err.Error(), "did not answer within 1s") {
		t.Errorf("migrate with no redis: %v", err)
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-redis", "127.0.0.1:1"}, io.Discard, io.Discard)
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
	if err := run(t.Context(), []string{"extra"}, io.Discard, io.Discard); err == nil {
		t.Error("a stray argument was accepted")
	}
}
