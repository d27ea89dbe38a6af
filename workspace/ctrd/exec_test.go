package ctrd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/image"
	"meshwork.dev/workspace/wsexec"
)

// result is what an exec printed and how it ended.
type result struct {
	Stdout, Stderr string
	Code           int
}

// execWith runs s in workspace name to its end, its output captured unless s names writers.
func execWith(ctx context.Context, rt *ctrd.Runtime, name string, s wsexec.Spec) (result, error) {
	var stdout, stderr bytes.Buffer
	if s.Stdout == nil {
		s.Stdout = &stdout
	}
	if s.Stderr == nil {
		s.Stderr = &stderr
	}
	p, err := rt.Exec(ctx, name, s)
	if err != nil {
		return result{}, err
	}
	code, err := waitCtx(ctx, p)
	return result{stdout.String(), stderr.String(), code}, err
}

// waitCtx waits for p, killing it when ctx ends first.
func waitCtx(ctx context.Context, p wsexec.Process) (int, error) {
	type exit struct {
		code int
		err  error
	}
	done := make(chan exit, 1)
	go func() {
		code, err := p.Wait()
		done <- exit{code, err}
	}()
	select {
	case e := <-done:
		return e.code, e.err
	case <-ctx.Done():
		p.Signal(syscall.SIGKILL)
		<-done
		return -1, fmt.Errorf("exec still running: %w", ctx.Err())
	}
}

func (e *env) exec(name string, s wsexec.Spec) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
	defer cancel()
	res, err := execWith(ctx, e.rt, name, s)
	if err != nil {
		e.t.Fatalf("exec %q: %v", s.Args, err)
	}
	return res
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func TestExec(t *testing.T) {
	e := newEnv(t)
	s := spec("ivy", 20)
	st := e.run(s)
	home := "/home/" + s.User

	t.Run("streams", func(t *testing.T) {
		got := e.exec(s.Name, wsexec.Spec{Args: sh("echo out; echo err >&2; exit 3")})
		if want := (result{"out\n", "err\n", 3}); got != want {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		in := strings.Repeat("through cat\n", 10000)
		got := e.exec(s.Name, wsexec.Spec{Args: []string{"cat"}, Stdin: strings.NewReader(in)})
		if got.Stdout != in || got.Code != 0 {
			t.Errorf("cat gave %d bytes, code %d; want the %d bytes in", len(got.Stdout), got.Code, len(in))
		}
		if got := e.exec(s.Name, wsexec.Spec{Args: []string{"cat"}}); got != (result{}) {
			t.Errorf("cat without stdin: %+v", got)
		}
	})
	t.Run("CloseStdin", func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pw.Close()
		out := new(syncBuffer)
		p := e.start(s.Name, wsexec.Spec{Args: []string{"cat"}, Stdin: pr, Stdout: out})
		fmt.Fprintln(pw, "before EOF")
		out.waitFor(t, "before EOF\n")
		if err := p.CloseStdin(); err != nil {
			t.Fatal(err)
		}
		if code, err := e.wait(p); code != 0 || err != nil {
			t.Errorf("cat after CloseStdin: %d, %v", code, err)
		}
	})
	t.Run("signal", func(t *testing.T) {
		p := e.start(s.Name, wsexec.Spec{Args: []string{"sleep", "100"}})
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		var se *wsexec.SignalError
		if code, err := e.wait(p); code != 128+int(syscall.SIGTERM) || !errors.As(err, &se) || se.Signal != syscall.SIGTERM {
			t.Errorf("sleep after SIGTERM: %d, %v; want 143 and killed by signal terminated", code, err)
		}
		if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("Signal after exit: %v, want os.ErrProcessDone", err)
		}
		if err := p.Resize(80, 24); err == nil {
			t.Errorf("Resize without a TTY: no error")
		}
	})
	t.Run("user", func(t *testing.T) {
		script := `id -u; id -g; id -G; id -un; echo $HOME; pwd; echo $USER $LOGNAME $SHELL; echo hi > ~/mine; echo ws > ~/workspaces/` + s.Name + `/w`
		got := e.exec(s.Name, wsexec.Spec{Args: sh(script)})
		want := fmt.Sprintf("1000\n1000\n1000\nivy\n%s\n%s\nivy ivy /bin/sh\n", home, home)
		if got.Stdout != want || got.Code != 0 {
			t.Errorf("as the user: %+v, want stdout %q", got, want)
		}
		for _, f := range []string{"home/ivy/mine", "workspaces/" + s.Name + "/w"} {
			if uid := ownerOf(t, filepath.Join(e.rt.Dir, f)); uid != ctrd.UserUID {
				t.Errorf("%s on the machine is uid %d's, want %d", f, uid, ctrd.UserUID)
			}
		}
	})
	t.Run("root", func(t *testing.T) {
		got := e.exec(s.Name, wsexec.Spec{Root: true, Args: sh("id -u; echo $HOME $USER; pwd")})
		if want := "0\n/root root\n/root\n"; got.Stdout != want || got.Code != 0 {
			t.Errorf("as root: %+v, want stdout %q", got, want)
		}
	})
	t.Run("env and dir", func(t *testing.T) {
		got := e.exec(s.Name, wsexec.Spec{Args: sh("echo $FOO $HOME; pwd"), Env: []string{"FOO=bar", "HOME=/tmp"}, Dir: "/tmp"})
		if want := "bar /tmp\n/tmp\n"; got.Stdout != want {
			t.Errorf("with Env and Dir: %+v, want stdout %q", got, want)
		}
	})
	t.Run("login shell", func(t *testing.T) {
		got := e.exec(s.Name, wsexec.Spec{Stdin: strings.NewReader("echo $0; id -un; pwd\n")})
		if want := "/bin/sh\nivy\n" + home + "\n"; got.Stdout != want || got.Code != 0 {
			t.Errorf("login shell: %+v, want stdout %q", got, want)
		}
	})
	t.Run("background child", func(t *testing.T) {
		t0 := time.Now()
		got := e.exec(s.Name, wsexec.Spec{Args: sh("sleep 100 & echo started")})
		if got.Stdout != "started\n" || got.Code != 0 {
			t.Errorf("got %+v", got)
		}
		if d := time.Since(t0); d > 15*time.Second {
			t.Errorf("a background child holding stdout kept Wait %v", d)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
				defer cancel()
				script := fmt.Sprintf("echo %d; echo e%d >&2; exit %d", i, i, i)
				got, err := execWith(ctx, e.rt, s.Name, wsexec.Spec{Args: sh(script)})
				if want := (result{fmt.Sprintf("%d\n", i), fmt.Sprintf("e%d\n", i), i}); err != nil || got != want {
					t.Errorf("exec %d: %+v, %v; want %+v", i, got, err, want)
				}
			})
		}
		wg.Wait()
	})
	t.Run("no such command", func(t *testing.T) {
		_, err := e.rt.Exec(t.Context(), s.Name, wsexec.Spec{Args: []string{"/bin/nonesuch"}})
		if err == nil || !strings.Contains(err.Error(), "/bin/nonesuch") {
			t.Errorf("Exec of a missing command: %v", err)
		} else {
			t.Logf("Exec of a missing command: %v", err)
		}
	})
	t.Run("PID", func(t *testing.T) {
		pid, err := e.rt.PID(t.Context(), s.Name)
		if err != nil || pid != st.PID {
			t.Errorf("PID = %d, %v; want %d", pid, err, st.PID)
		}
	})
}

func TestExecTTY(t *testing.T) {
	e := newEnv(t)
	s := spec("jan", 21)
	e.run(s)
	pr, pw := io.Pipe()
	defer pw.Close()
	out := new(syncBuffer)
	p := e.start(s.Name, wsexec.Spec{
		Args: sh("tty; stty size; echo $TERM; read x; stty size; echo to stderr >&2"),
		TTY:  true, Width: 80, Height: 24,
		Stdin: pr, Stdout: out, Stderr: failWriter{t},
	})
	out.waitFor(t, "24 80\r\nxterm\r\n")
	if got := out.String(); !strings.HasPrefix(got, "/dev/pts/") {
		t.Errorf("tty printed %q, want /dev/pts/…", got)
	}
	if err := p.Resize(100, 40); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(pw)
	out.waitFor(t, "40 100\r\nto stderr\r\n")
	if code, err := e.wait(p); code != 0 || err != nil {
		t.Errorf("exit %d, %v", code, err)
	}
}

// TestExecImageUsers: an image with no /etc/passwd gets root and the user, whose login shell
// is /bin/bash when the image has one; the Tools dir is there, read-only, for root too.
func TestExecImageUsers(t *testing.T) {
	e := newEnv(t)
	e.rt.Tools = t.TempDir()
	if err := os.WriteFile(filepath.Join(e.rt.Tools, "tool"), []byte("#!/bin/sh\necho tool $(id -u)\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	const ref = "meshwork.dev/test-nopasswd:1"
	importImage(t, e.rt, ref, func(f image.File) bool { return f.Path != "/etc/passwd" && f.Path != "/etc/group" },
		image.File{Path: "/bin/bash", Mode: 0o755, Data: []byte("#!/bin/sh\necho bash stub\nexec /bin/sh \"$@\"\n")})
	s := spec("zed", 22)
	s.Image = ref
	e.run(s)
	got := e.exec(s.Name, wsexec.Spec{Args: sh("cat /etc/passwd /etc/group; echo $SHELL")})
	want := "root:x:0:0:root:/root:/bin/sh\nzed:x:1000:1000::/home/zed:/bin/bash\nroot:x:0:\nzed:x:1000:\n/bin/bash\n"
	if got.Stdout != want {
		t.Errorf("users: %+v, want stdout %q", got, want)
	}
	if got := e.exec(s.Name, wsexec.Spec{Stdin: strings.NewReader("id -un\n")}); got.Stdout != "bash stub\nzed\n" {
		t.Errorf("login shell: %+v", got)
	}
	for _, root := range []bool{false, true} {
		got := e.exec(s.Name, wsexec.Spec{Root: root, Args: sh(ctrd.ToolsPath + "/tool; touch " + ctrd.ToolsPath + "/x")})
		uid := map[bool]string{false: "1000", true: "0"}[root]
		if got.Stdout != "tool "+uid+"\n" || got.Code == 0 || !strings.Contains(got.Stderr, "Read-only") {
			t.Errorf("tools as uid %s: %+v, want it run and unwritable", uid, got)
		}
	}
	if _, err := os.Stat(filepath.Join(e.rt.Tools, "x")); err == nil {
		t.Errorf("a workspace wrote to the tools dir")
	}
	if got := e.exec(s.Name, wsexec.Spec{Args: sh("tool")}); got.Stdout != "tool 1000\n" {
		t.Errorf("the tools by name (on PATH, as meshctl is in a workspace): %+v", got)
	}
}

// TestExecNotRunning: Exec and PID name the workspace and its state; after Stop and lost
// passwd files, Run makes them again.
func TestExecNotRunning(t *testing.T) {
	e := newEnv(t)
	s := spec("kim", 23)
	e.run(s)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := e.rt.Exec(ctx, "ws-nonesuch", wsexec.Spec{Args: []string{"true"}}); !errors.Is(err, ctrd.ErrNotFound) {
		t.Errorf("Exec in an unknown workspace: %v", err)
	}
	if err := e.rt.Stop(ctx, s.Name); err != nil {
		t.Fatal(err)
	}
	_, err := e.rt.Exec(ctx, s.Name, wsexec.Spec{Args: []string{"true"}})
	if !errors.Is(err, ctrd.ErrNotRunning) || !strings.Contains(err.Error(), s.Name) || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("Exec in a stopped workspace: %v", err)
	}
	if _, err := e.rt.PID(ctx, s.Name); !errors.Is(err, ctrd.ErrNotRunning) {
		t.Errorf("PID of a stopped workspace: %v", err)
	}
	for _, f := range []string{"passwd", "group"} {
		if err := os.Remove(filepath.Join(e.rt.Dir, "run", s.Name, f)); err != nil {
			t.Fatal(err)
		}
	}
	e.run(s)
	if got := e.exec(s.Name, wsexec.Spec{Args: sh("id -un; grep kim /etc/group")}); got.Stdout != "kim\nkim:x:1000:\n" {
		t.Errorf("after Run made the files again: %+v", got)
	}

	// A container made before the passwd mounts runs, and execs as uid 1000 with no name.
	if err := e.rt.Stop(ctx, s.Name); err != nil {
		t.Fatal(err)
	}
	stripMounts(t, s, "/etc/passwd", "/etc/group")
	for _, f := range []string{"passwd", "group"} {
		os.Remove(filepath.Join(e.rt.Dir, "run", s.Name, f))
	}
	e.run(s)
	got := e.exec(s.Name, wsexec.Spec{Args: sh("id -u; echo $HOME; grep -c kim /etc/passwd")})
	if got.Stdout != "1000\n/home/kim\n0\n" {
		t.Errorf("in a container without the mounts: %+v", got)
	}
}

// stripMounts removes the mounts at dsts from s's container spec, as older Runs made it.
func stripMounts(t *testing.T, s ctrd.Spec, dsts ...string) {
	t.Helper()
	c, ctx := client(t)
	ctr, err := c.LoadContainer(ctx, ctrd.ContainerID(s.ID))
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ctr.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sp.Mounts = slices.DeleteFunc(sp.Mounts, func(m specs.Mount) bool { return slices.Contains(dsts, m.Destination) })
	if err := ctr.Update(ctx, containerd.UpdateContainerOpts(containerd.WithSpec(sp))); err != nil {
		t.Fatal(err)
	}
}

// importImage imports busybox (the files keep keeps) plus extra as ref.
func importImage(t *testing.T, rt *ctrd.Runtime, ref string, keep func(image.File) bool, extra ...image.File) {
	t.Helper()
	files, err := image.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	var kept []image.File
	for _, f := range files {
		if keep(f) {
			kept = append(kept, f)
		}
	}
	var buf bytes.Buffer
	if err := image.Build(&buf, ref, append(kept, extra...), image.Config{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := rt.Import(ctx, &buf); err != nil {
		t.Fatal(err)
	}
}

func (e *env) start(name string, s wsexec.Spec) wsexec.Process {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
	defer cancel()
	p, err := e.rt.Exec(ctx, name, s)
	if err != nil {
		e.t.Fatalf("exec %q: %v", s.Args, err)
	}
	e.t.Cleanup(func() { p.Signal(syscall.SIGKILL); p.Wait() })
	return p
}

func (e *env) wait(p wsexec.Process) (int, error) {
	ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
	defer cancel()
	return waitCtx(ctx, p)
}

func ownerOf(t *testing.T, path string) int {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits up to 20s for the output to hold sub.
func (s *syncBuffer) waitFor(t *testing.T, sub string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(s.String(), sub); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q: no %q", s.String(), sub)
		}
	}
}

// failWriter fails the test on any write.
type failWriter struct{ t *testing.T }

func (w failWriter) Write(p []byte) (int, error) {
	w.t.Errorf("unexpected write %q", p)
	return len(p), nil
}
