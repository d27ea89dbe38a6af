package ctrd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"

	"meshwork.dev/overlay/lab"
	"meshwork.dev/workspace/compose"
	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/wsnet"
)

// svcNamespace is the containerd namespace of the service tests.
const svcNamespace = "svcb-test"

var (
	svcImageOnce sync.Once
	svcImageErr  error
)

// svcEnv is one service test's workmachine: a lab host, a runtime in svcNamespace, a dir.
type svcEnv struct {
	t    *testing.T
	host *lab.Host
	rt   *ctrd.Runtime
}

func newSvcEnv(t *testing.T) *svcEnv {
	t.Helper()
	skipUnlessReady(t)
	l := lab.New(t)
	h := l.Host("wm")
	lo, err := h.Netlink().LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"100.64.0.1/32", "100.64.0.2/32", "100.64.0.3/32", "fd7a:115c:a1e0::1/128", "fd7a:115c:a1e0::2/128"} {
		addr, _ := netlinkParseAddr(a)
		if err := h.Netlink().AddrAdd(lo, addr); err != nil {
			t.Fatal(err)
		}
	}
	machine := "svcb-" + randHex(4)
	rt := &ctrd.Runtime{Namespace: svcNamespace, Machine: machine, Identity: "id-" + machine, Dir: t.TempDir(),
		SecretsDir: filepath.Join("/run", "svcb-secrets-"+randHex(4)), StopGrace: time.Second, Logf: t.Logf}
	t.Cleanup(func() { rt.Close(); os.Remove(rt.SecretsDir) })
	svcImageOnce.Do(func() { svcImageErr = buildAndImport(rt) })
	if svcImageErr != nil {
		t.Fatal(svcImageErr)
	}
	return &svcEnv{t: t, host: h, rt: rt}
}

// svcSpec is a service of the wsecho test image (echo server on :8080) at 100.64.0.<host>.
func svcSpec(name string, host byte) ctrd.ServiceSpec {
	id := randHex(4)
	v4 := netip.AddrFrom4([4]byte{100, 64, 0, host})
	v6 := netip.MustParseAddr(fmt.Sprintf("fd7a:115c:a1e0::%d", host))
	return ctrd.ServiceSpec{
		ID: "e_" + id + "." + name, Env: "env" + id, EnvID: "e_" + id,
		Service: compose.Spec{Name: name, Image: testImage},
		IPv4:    v4, IPv6: v6,
		Hosts: []ctrd.HostEntry{{Addr: v4, Names: []string{name}}, {Addr: v6, Names: []string{name}}},
		DNS:   []string{"100.100.100.100"}, Search: []string{"env" + id + ".mesh.internal"},
		Hash: "h1",
	}
}

func (e *svcEnv) ctx() context.Context {
	ctx, cancel := context.WithTimeout(e.t.Context(), 60*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// run runs s, deleting it (and its volumes) when the test ends.
func (e *svcEnv) run(s ctrd.ServiceSpec) ctrd.ServiceStatus {
	e.t.Helper()
	e.t.Cleanup(func() {
		err := e.host.Do(func() error {
			return errors.Join(e.rt.DeleteService(context.Background(), s.ID), e.rt.DeleteVolumes(context.Background(), s.EnvID))
		})
		if err != nil {
			e.t.Errorf("cleanup: %v", err)
		}
	})
	var st ctrd.ServiceStatus
	err := e.host.Do(func() (err error) { st, err = e.rt.RunService(e.ctx(), s, nil); return err })
	if err != nil {
		e.t.Fatal(err)
	}
	if st.State != ctrd.StateRunning || st.PID <= 0 {
		e.t.Fatalf("RunService = %+v, want running with a pid", st)
	}
	return st
}

// sh runs script in service id and returns its output, failing the test unless it exits 0.
func (e *svcEnv) sh(id, script string) string {
	e.t.Helper()
	code, out, err := e.rt.ExecService(e.ctx(), id, []string{"/bin/sh", "-c", script}, 10*time.Second)
	if err != nil || code != 0 {
		e.t.Fatalf("exec %q: code %d, %v: %s", script, code, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (e *svcEnv) status(id string) (ctrd.ServiceStatus, bool) {
	e.t.Helper()
	sts, err := e.rt.ListServices(e.ctx())
	if err != nil {
		e.t.Fatal(err)
	}
	for _, st := range sts {
		if st.ID == id {
			return st, true
		}
	}
	return ctrd.ServiceStatus{}, false
}

// TestServiceRun runs a service from a compose definition and checks what it sees inside, then
// adoption, recreation on a new hash, stop and delete, with its named volume kept throughout.
func TestServiceRun(t *testing.T) {
	e := newSvcEnv(t)
	s := svcSpec("api", 10)
	s.Hosts = append(s.Hosts, ctrd.HostEntry{Addr: netip.MustParseAddr("100.64.0.11"), Names: []string{"db", "database"}})
	s.Service.Environment = map[string]string{"GREETING": "hello there"}
	s.Service.User = "nobody"
	s.Service.WorkingDir = "/tmp"
	s.Service.Hostname = "apihost"
	s.Service.Labels = map[string]string{"tier": "web"}
	s.Service.Limits = compose.Limits{CPUs: 0.5, MemoryBytes: 64 << 20}
	s.Service.Tmpfs = []string{"/scratch"}
	s.Service.Volumes = []compose.Mount{{Volume: "data", Target: "/data"}, {Target: "/anon"}}
	st := e.run(s)

	for script, want := range map[string]string{
		"id -u; id -g":                "65534\n65534",
		"pwd":                         "/tmp",
		"echo $GREETING":              "hello there",
		"hostname; cat /etc/hostname": "apihost\napihost",
		"grep db /etc/hosts":          "100.64.0.11\tdb database",
		"cat /etc/resolv.conf":        "nameserver 100.100.100.100\nsearch " + s.Search[0],
		"grep -c ' /scratch tmpfs ' /proc/mounts":                   "1",
		"test -e /run/meshwork || test -e /.meshwork || echo clean": "clean",
	} {
		if got := e.sh(s.ID, script); got != want {
			t.Errorf("%s = %q, want %q", script, got, want)
		}
	}
	c, cctx := client(t)
	ctr, err := c.LoadContainer(namespacesWith(cctx, svcNamespace), ctrd.ServiceContainerID(s.ID))
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ctr.Spec(namespacesWith(cctx, svcNamespace))
	if err != nil {
		t.Fatal(err)
	}
	if r := sp.Linux.Resources; r.Memory == nil || *r.Memory.Limit != 64<<20 || r.CPU == nil || *r.CPU.Quota != 50000 {
		t.Errorf("resources = %+v, want 64 MiB and half a CPU", r)
	}
	labels, _ := ctr.Labels(namespacesWith(cctx, svcNamespace))
	if labels["tier"] != "web" || labels[ctrd.LabelHash] != "h1" {
		t.Errorf("labels = %v, want tier=web and the hash", labels)
	}
	// The volumes are root's 0755 dirs (docker's too, for a path the image lacks): write from the host.
	for _, m := range sp.Mounts {
		if m.Destination == "/data" || m.Destination == "/anon" {
			if err := os.WriteFile(filepath.Join(m.Source, "f"), []byte("kept\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := e.sh(s.ID, "cat /data/f /anon/f"); got != "kept\nkept" {
		t.Errorf("volumes hold %q, want kept twice", got)
	}

	// Listed as a service, never as a workspace.
	if got, ok := e.status(s.ID); !ok || got.State != ctrd.StateRunning || got.Name != "api" || got.EnvID != s.EnvID || got.Hash != "h1" {
		t.Errorf("ListServices has %+v (%v), want api running", got, ok)
	}
	if wss, err := e.rt.List(e.ctx()); err != nil || len(wss) != 0 {
		t.Errorf("List = %+v, %v: want no workspaces", wss, err)
	}

	// The same hash adopts the running task.
	if again := e.run(s); again.PID != st.PID {
		t.Errorf("RunService again: pid %d, want %d (adopted)", again.PID, st.PID)
	}
	// Another hash recreates: the named volume stays, the anonymous one is new.
	s.Hash = "h2"
	if again := e.run(s); again.PID == st.PID {
		t.Errorf("RunService with a new hash kept pid %d", st.PID)
	}
	if got := e.sh(s.ID, "cat /data/f; ls /anon | wc -l"); got != "kept\n0" {
		t.Errorf("after recreation: %q, want the named volume kept and the anonymous one empty", got)
	}

	// Stop: stopped, Wait returns at once; Run starts it again.
	if err := e.rt.StopService(e.ctx(), s.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.status(s.ID); got.State != ctrd.StateStopped {
		t.Errorf("after stop: %+v, want stopped", got)
	}
	if err := e.rt.StopService(e.ctx(), s.ID); err != nil {
		t.Errorf("stopping a stopped service: %v", err)
	}
	if _, err := e.rt.WaitService(e.ctx(), s.ID); err != nil {
		t.Errorf("WaitService on a stopped service: %v", err)
	}
	e.run(s)

	// Delete: gone, but for its named volume, which DeleteVolumes removes.
	vol := filepath.Join(e.rt.Dir, "volumes", s.EnvID, "data", "f")
	if err := e.host.Do(func() error { return e.rt.DeleteService(e.ctx(), s.ID) }); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.status(s.ID); ok {
		t.Error("ListServices still lists the deleted service")
	}
	if nc := ctrd.ServiceNetConfig(s); wsnet.Exists(nc) {
		t.Errorf("network namespace %s outlived DeleteService", nc.Netns)
	}
	if _, err := e.rt.WaitService(e.ctx(), s.ID); !errors.Is(err, ctrd.ErrNotFound) {
		t.Errorf("WaitService after delete: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(vol); err != nil {
		t.Errorf("named volume after DeleteService: %v", err)
	}
	if err := e.rt.DeleteVolumes(e.ctx(), s.EnvID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(vol); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("named volume after DeleteVolumes: %v", err)
	}
	if err := e.host.Do(func() error { return e.rt.DeleteService(e.ctx(), s.ID) }); err != nil {
		t.Errorf("deleting a deleted service: %v", err)
	}
}

// TestServiceCommand checks compose's entrypoint and command over the image's, and
// WaitService's exit code.
func TestServiceCommand(t *testing.T) {
	e := newSvcEnv(t)
	s := svcSpec("job", 12)
	s.Service.Entrypoint = []string{"/bin/sh", "-c"}
	s.Service.Command = []string{"echo migrating; sleep 1; exit 3"}
	e.run(s)
	code, err := e.rt.WaitService(e.ctx(), s.ID)
	if err != nil || code != 3 {
		t.Fatalf("WaitService = %d, %v; want 3", code, err)
	}
	if got, _ := e.status(s.ID); got.State != ctrd.StateStopped || got.ExitCode != 3 {
		t.Errorf("status = %+v, want stopped with exit code 3", got)
	}
	// Started again (the agent's restart policy), then its old exit code is still known.
	e.run(s)
	if code, err := e.rt.WaitService(e.ctx(), s.ID); err != nil || code != 3 {
		t.Errorf("second WaitService = %d, %v; want 3", code, err)
	}
	if log, err := os.ReadFile(e.rt.ServiceLogPath(s.ID)); err != nil || bytes.Count(log, []byte("migrating")) != 2 {
		t.Errorf("log = %q, %v; want the output of both runs", log, err)
	}
}

func namespacesWith(ctx context.Context, ns string) context.Context {
	return namespaces.WithNamespace(ctx, ns)
}
