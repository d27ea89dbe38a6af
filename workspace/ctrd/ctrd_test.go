package ctrd_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"meshwork.dev/overlay/lab"
	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/image"
)

// testNamespace keeps test containers apart from real ones (scripts/lab-clean.sh empties it).
const testNamespace = "meshwork-test"

const testImage = "meshwork.dev/test-wsecho:1"

var (
	imageOnce sync.Once
	imageErr  error
)

// TestMain runs the test binary as TestSurvivesAgentKill's child agent when asked to
// (childEnv set), else the tests.
func TestMain(m *testing.M) {
	if raw := os.Getenv(childEnv); raw != "" {
		os.Exit(childAgent(raw))
	}
	os.Exit(m.Run())
}

func skipUnlessReady(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("ctrd: needs root for containerd and network namespaces")
	}
	if _, err := os.Stat(ctrd.DefaultAddress); err != nil {
		t.Skipf("ctrd: no containerd at %s (start it with scripts/deps.sh)", ctrd.DefaultAddress)
	}
}

// env is one test's workmachine: a lab host as its network namespace, a runtime and a dir.
type env struct {
	t    *testing.T
	host *lab.Host
	rt   *ctrd.Runtime
}

func newEnv(t *testing.T) *env {
	t.Helper()
	skipUnlessReady(t)
	l := lab.New(t)
	h := l.Host("wm")
	lo, err := h.Netlink().LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"100.64.0.1/32", "fd7a:115c:a1e0::1/128"} {
		addr, _ := netlinkParseAddr(a)
		if err := h.Netlink().AddrAdd(lo, addr); err != nil {
			t.Fatal(err)
		}
	}
	e := &env{t: t, host: h, rt: newRuntime(t, "wm-"+randHex(4), t.TempDir())}
	importTestImage(t, e.rt)
	return e
}

func newRuntime(t *testing.T, machine, dir string) *ctrd.Runtime {
	rt := &ctrd.Runtime{Namespace: testNamespace, Machine: machine, Identity: "id-" + machine, Dir: dir, StopGrace: time.Second, Logf: t.Logf}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// spec returns a workspace spec with a fresh id and name; host is the last IPv4 byte.
func spec(user string, host byte) ctrd.Spec {
	id := randHex(4)
	return ctrd.Spec{
		ID: "w_" + id, Name: "ws-" + id, User: user, Image: testImage,
		IPv4:   netip.AddrFrom4([4]byte{100, 64, 0, host}),
		IPv6:   netip.MustParseAddr(fmt.Sprintf("fd7a:115c:a1e0::%d", host)),
		DNS:    []string{"100.100.100.100"},
		Search: []string{"mesh.internal"},
	}
}

// do runs f inside the test's workmachine namespace.
func (e *env) do(f func() error) error { return e.host.Do(f) }

func (e *env) run(s ctrd.Spec) ctrd.Status {
	e.t.Helper()
	return e.runWith(e.rt, s)
}

func (e *env) runWith(rt *ctrd.Runtime, s ctrd.Spec) ctrd.Status {
	e.t.Helper()
	e.deleteOnCleanup(rt, s)
	ctx, cancel := context.WithTimeout(e.t.Context(), 60*time.Second)
	defer cancel()
	var st ctrd.Status
	err := e.do(func() (err error) { st, err = rt.Run(ctx, s, nil); return err })
	if err != nil {
		e.t.Fatal(err)
	}
	if st.State != ctrd.StateRunning || st.PID <= 0 {
		e.t.Fatalf("Run = %+v, want running with a pid", st)
	}
	return st
}

// deleteOnCleanup deletes s when the test ends, whatever happened.
func (e *env) deleteOnCleanup(rt *ctrd.Runtime, s ctrd.Spec) {
	e.t.Cleanup(func() { // by a runtime of its own: the test may have closed rt
		rt := &ctrd.Runtime{Namespace: testNamespace, Machine: rt.Machine, Identity: rt.Identity, Dir: rt.Dir, Logf: e.t.Logf}
		defer rt.Close()
		if err := e.do(func() error { return rt.Delete(context.Background(), s.Name) }); err != nil {
			e.t.Errorf("cleanup: %v", err)
		}
	})
}

// hello connects to the workspace's echo server and returns its greeting, checking the echo.
func (e *env) hello(addr netip.Addr) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 20*time.Second)
	defer cancel()
	var c net.Conn
	var err error
	for ctx.Err() == nil { // the server may still be starting
		if c, err = e.host.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, 8080).String()); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		e.t.Fatalf("dial %v:8080: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		e.t.Fatalf("read greeting: %v", err)
	}
	fmt.Fprintf(c, "ping\n")
	if echo, err := br.ReadString('\n'); err != nil || echo != "ping\n" {
		e.t.Errorf("echo = %q, %v", echo, err)
	}
	return strings.TrimSpace(line)
}

// importTestImage builds busybox + wsecho once per test binary and imports it.
func importTestImage(t *testing.T, rt *ctrd.Runtime) {
	t.Helper()
	imageOnce.Do(func() { imageErr = buildAndImport(rt) })
	if imageErr != nil {
		t.Fatal(imageErr)
	}
}

func buildAndImport(rt *ctrd.Runtime) error {
	dir, err := os.MkdirTemp("", "ctrd-test-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "wsecho")
	cmd := exec.Command("go", "build", "-o", bin, "meshwork.dev/scripts/wsecho")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build wsecho: %v: %s", err, out)
	}
	tarball, err := buildImage(testImage, bin, image.Config{Cmd: []string{"/usr/local/bin/wsecho", "-tcp", ":8080", "-udp", ":8081"}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	names, err := rt.Import(ctx, bytes.NewReader(tarball))
	if err != nil {
		return err
	}
	if len(names) != 1 || names[0] != testImage {
		return fmt.Errorf("Import = %q, want [%s]", names, testImage)
	}
	return nil
}

func buildImage(ref, wsecho string, cfg image.Config) ([]byte, error) {
	files, err := image.Busybox()
	if err != nil {
		return nil, err
	}
	if wsecho != "" {
		data, err := os.ReadFile(wsecho)
		if err != nil {
			return nil, err
		}
		files = append(files, image.File{Path: "/usr/local/bin/wsecho", Mode: 0o755, Data: data})
	}
	var buf bytes.Buffer
	err = image.Build(&buf, ref, files, cfg)
	return buf.Bytes(), err
}

// client is a containerd client of the test's own, for checking what the runtime did.
func client(t *testing.T) (*containerd.Client, context.Context) {
	t.Helper()
	c, err := containerd.New(ctrd.DefaultAddress)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, namespaces.WithNamespace(t.Context(), testNamespace)
}

// execIn runs sh -c script in s's running container and returns its stdout.
func execIn(t *testing.T, s ctrd.Spec, script string) string {
	t.Helper()
	c, ctx := client(t)
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	ctr, err := c.LoadContainer(ctx, ctrd.ContainerID(s.ID))
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ctr.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pspec := sp.Process
	pspec.Terminal, pspec.Args = false, []string{"/bin/sh", "-c", script}
	var stdout, stderr bytes.Buffer
	p, err := task.Exec(ctx, "t"+randHex(4), pspec, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Delete(context.WithoutCancel(ctx))
	exited, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-exited:
		if st.ExitCode() != 0 {
			t.Fatalf("exec %q: exit %d: %s", script, st.ExitCode(), stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("exec %q: %v", script, ctx.Err())
	}
	p.IO().Wait()
	return stdout.String()
}

func isNotFound(err error) bool { return errdefs.IsNotFound(err) || errors.Is(err, ctrd.ErrNotFound) }
