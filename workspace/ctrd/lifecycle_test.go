package ctrd_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"meshwork.dev/workspace/ctrd"
)

func TestRunGreets(t *testing.T) {
	e := newEnv(t)
	s := spec("alice", 7)
	e.run(s)
	want := "hello from " + s.Name
	if got := e.hello(s.IPv4); got != want {
		t.Errorf("greeting %q, want %q", got, want)
	}
	if got := e.hello(s.IPv6); got != want {
		t.Errorf("greeting over IPv6 %q, want %q", got, want)
	}
	if got := execIn(t, s, "cat /etc/hostname; echo $HOME $USER; grep nameserver /etc/resolv.conf"); got != s.Name+"\n/home/alice alice\nnameserver 100.100.100.100\n" {
		t.Errorf("inside: %q", got)
	}
}

// TestStopKeepsFiles: home, workspace dir and rootfs changes survive Stop and Run, and a second
// workspace of the same user sees the same home.
func TestStopKeepsFiles(t *testing.T) {
	e := newEnv(t)
	s := spec("bob", 8)
	first := e.run(s)
	execIn(t, s, "echo home > ~/h; echo ws > ~/workspaces/"+s.Name+"/w; echo root > /etc/r")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := e.rt.Stop(ctx, s.Name); err != nil {
		t.Fatal(err)
	}
	if st, err := e.rt.Status(ctx, s.Name); err != nil || st.State != ctrd.StateStopped {
		t.Fatalf("after Stop: %+v, %v", st, err)
	}
	if err := e.rt.Stop(ctx, s.Name); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	second := e.run(s)
	if second.PID == first.PID {
		t.Errorf("Run after Stop kept pid %d", first.PID)
	}
	if got := execIn(t, s, "cat ~/h ~/workspaces/"+s.Name+"/w /etc/r"); got != "home\nws\nroot\n" {
		t.Errorf("after Stop and Run: %q", got)
	}
	other := spec("bob", 9)
	e.run(other)
	if got := execIn(t, other, "cat ~/h"); got != "home\n" {
		t.Errorf("second workspace of bob reads home %q", got)
	}
	if _, err := os.Stat(filepath.Join(e.rt.Dir, "home/bob/h")); err != nil {
		t.Errorf("home file not on the machine: %v", err)
	}
}

// TestAdopt: a new Runtime (an agent restart) adopts the running task, same pid; List sees it;
// another machine's List does not.
func TestAdopt(t *testing.T) {
	e := newEnv(t)
	s := spec("carol", 10)
	first := e.run(s)
	e.rt.Close()
	again := newRuntime(t, e.rt.Machine, e.rt.Dir)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	list, err := again.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(list, first) {
		t.Errorf("List = %+v, want it to hold %+v", list, first)
	}
	var st ctrd.Status
	if err := e.do(func() (err error) { st, err = again.Run(ctx, s, nil); return err }); err != nil {
		t.Fatal(err)
	}
	if st != first {
		t.Errorf("adopted %+v, want %+v", st, first)
	}
	if got := e.hello(s.IPv4); got != "hello from "+s.Name {
		t.Errorf("after adoption: %q", got)
	}
	stranger := newRuntime(t, "other-"+e.rt.Machine, t.TempDir())
	list, err = stranger.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("another machine lists %+v", list)
	}
	if err := stranger.Delete(ctx, s.Name); err != nil {
		t.Errorf("another machine's Delete: %v", err)
	}
	if _, err := again.Status(ctx, s.Name); err != nil {
		t.Errorf("another machine's Delete touched ours: %v", err)
	}
	if _, err := stranger.Run(ctx, s, nil); err == nil || !strings.Contains(err.Error(), "belongs to machine") {
		t.Errorf("another machine's Run of our id: %v", err)
	}
}

// TestDeleteLeavesNothing: no container, snapshot, netns, veth or route; the home stays.
func TestDeleteLeavesNothing(t *testing.T) {
	e := newEnv(t)
	s := spec("dave", 11)
	e.run(s)
	execIn(t, s, "echo keep > ~/k")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for range 2 {
		if err := e.do(func() error { return e.rt.Delete(ctx, s.Name) }); err != nil {
			t.Fatal(err)
		}
	}
	e.assertNothingOf(s)
	if b, err := os.ReadFile(filepath.Join(e.rt.Dir, "home/dave/k")); err != nil || string(b) != "keep\n" {
		t.Errorf("home after Delete: %q, %v", b, err)
	}
}

func (e *env) assertNothingOf(s ctrd.Spec) {
	e.t.Helper()
	c, ctx := client(e.t)
	if _, err := c.LoadContainer(ctx, ctrd.ContainerID(s.ID)); !isNotFound(err) {
		e.t.Errorf("container still there (%v)", err)
	}
	if _, err := c.SnapshotService(ctrd.DefaultSnapshotter).Stat(ctx, ctrd.ContainerID(s.ID)); !isNotFound(err) {
		e.t.Errorf("snapshot still there (%v)", err)
	}
	nc := ctrd.NetConfig(s)
	if _, err := os.Stat("/var/run/netns/" + nc.Netns); err == nil {
		e.t.Errorf("netns %s still there", nc.Netns)
	}
	if _, err := e.host.Netlink().LinkByName(nc.HostIf); err == nil {
		e.t.Errorf("veth %s still there", nc.HostIf)
	}
	routes, _ := e.host.Netlink().RouteGet(s.IPv4.AsSlice())
	for _, r := range routes {
		if r.LinkIndex > 1 {
			e.t.Errorf("route to %v still there: %+v", s.IPv4, r)
		}
	}
	for _, p := range []string{"workspaces/" + s.Name, "run/" + s.Name} {
		if _, err := os.Stat(filepath.Join(e.rt.Dir, p)); err == nil {
			e.t.Errorf("%s still there", p)
		}
	}
}

// TestBadImage: an image that is neither present nor pullable fails clearly, leaving nothing.
func TestBadImage(t *testing.T) {
	e := newEnv(t)
	for _, ref := range []string{"registry.invalid/meshwork/nope:1", "Not A Ref"} {
		s := spec("erin", 12)
		s.Image = ref
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		var st ctrd.Status
		err := e.do(func() (err error) { st, err = e.rt.Run(ctx, s, nil); return err })
		cancel()
		if err == nil || !strings.Contains(err.Error(), "import it or check the name") || !strings.Contains(err.Error(), ref) {
			t.Errorf("Run(%q) error = %v", ref, err)
		}
		if st.State != ctrd.StateFailed || st.Reason == "" {
			t.Errorf("Run(%q) status = %+v", ref, st)
		}
		e.assertNothingOf(s)
	}
}

// TestLimits: CPU and memory limits reach the container's cgroup.
func TestLimits(t *testing.T) {
	e := newEnv(t)
	s := spec("frank", 13)
	s.CPU, s.Memory = 0.5, 64<<20
	st := e.run(s)
	mem, cpu := cgroupLimits(t, st.PID)
	if mem != "67108864" {
		t.Errorf("memory limit %q, want 67108864", mem)
	}
	if cpu != "50000" && cpu != "50000 100000" {
		t.Errorf("cpu limit %q, want a 50000 µs quota", cpu)
	}
}

// cgroupLimits reads the memory limit and CPU quota of pid's cgroup, v1 or v2.
func cgroupLimits(t *testing.T, pid int) (mem, cpu string) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		v, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		return strings.TrimSpace(string(v))
	}
	paths := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		for _, ctl := range strings.Split(parts[1], ",") {
			paths[ctl] = parts[2]
		}
	}
	if p, ok := paths["memory"]; ok { // cgroup v1 (this lab's kernel)
		return read("/sys/fs/cgroup/memory" + p + "/memory.limit_in_bytes"), read("/sys/fs/cgroup/cpu" + paths["cpu"] + "/cpu.cfs_quota_us")
	}
	p := "/sys/fs/cgroup" + paths[""]
	return read(p + "/memory.max"), read(p + "/cpu.max")
}

// TestExitReported: a task that exits on its own is failed, with its exit code.
func TestExitReported(t *testing.T) {
	e := newEnv(t)
	tarball, err := buildImage("meshwork.dev/test-exit3:1", "", imageConfigCmd("sleep 1; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := e.rt.Import(ctx, bytesReader(tarball)); err != nil {
		t.Fatal(err)
	}
	s := spec("gina", 14)
	s.Image = "meshwork.dev/test-exit3:1"
	e.run(s)
	for {
		st, err := e.rt.Status(ctx, s.Name)
		if err != nil {
			t.Fatal(err)
		}
		if st.State == ctrd.StateFailed {
			if st.Reason != "exited with code 3" {
				t.Errorf("reason %q", st.Reason)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("still %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := e.run(s); st.State != ctrd.StateRunning {
		t.Errorf("Run after exit: %+v", st)
	}
}
