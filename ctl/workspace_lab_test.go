package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/overlay/lab"
	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/image"
	"meshwork.dev/workspace/wsnet"
)

// echoImage is the workspace image the lab tests run: busybox and wsecho (scripts/wsecho),
// which greets every TCP connection on :8080 with "hello from <hostname>" and echoes UDP on
// :8081.
const echoImage = "meshwork.dev/test/wsecho:lab"

var importOnce sync.Map // containerd address → error of its import

// importEchoImage builds echoImage offline and imports it into the project's containerd,
// once per test binary. Without containerd the test skips, saying how to start it.
func importEchoImage(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(ctrd.DefaultAddress); err != nil {
		t.Skipf("containerd is not running at %s (run scripts/deps.sh)", ctrd.DefaultAddress)
	}
	v, _ := importOnce.LoadOrStore(ctrd.DefaultAddress, sync.OnceValue(func() error { return buildEchoImage(t) }))
	if err := v.(func() error)(); err != nil {
		t.Fatal(err)
	}
}

// goBuild builds a static binary of pkg (CGO off: it runs in any image) into dir and
// returns its path.
func goBuild(dir, pkg string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	build := exec.Command("go", "build", "-o", out, pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %v: %s", pkg, err, msg)
	}
	return out, nil
}

func buildEchoImage(t testing.TB) error {
	dir, err := os.MkdirTemp("", "wsecho")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path, err := goBuild(dir, "meshwork.dev/scripts/wsecho")
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	files, err := image.Busybox()
	if err != nil {
		return err
	}
	files = append(files, image.File{Path: "/bin/wsecho", Mode: 0o755, Data: bin})
	var tar bytes.Buffer
	if err := image.Build(&tar, echoImage, files, image.Config{Cmd: []string{"/bin/wsecho", "-tcp", ":8080", "-udp", ":8081"}}); err != nil {
		return err
	}
	rt := &ctrd.Runtime{Machine: "lab-import", Identity: "lab-import", Dir: dir}
	defer rt.Close()
	_, err = rt.Import(context.Background(), &tar)
	return err
}

// workmachine is a lab host running `meshctl node`.
type workmachine struct {
	name  string
	host  *lab.Host
	state string
	proc  *lab.Proc
	ml    *meshLab // its coord, which knows its stable node ID
	id    string   // that ID once looked up (the agent's ctrd.Runtime.Identity)
}

// workmachine starts the agent on a new host of the lab's internet and waits until coord
// lists it.
func (ml *meshLab) workmachine(t testing.TB, name string, agentArgs ...string) *workmachine {
	wm := &workmachine{name: name, host: ml.in.PublicHost(name), state: filepath.Join(t.TempDir(), name), ml: ml}
	wm.start(ml, agentArgs...)
	t.Cleanup(func() { wm.removeAll(t) })
	eventually(t, 60*time.Second, name+" on the mesh", func() error {
		out, err := ml.ctl(ml.coord, "node", "list")
		if err == nil && !strings.Contains(out, name+" ") {
			err = fmt.Errorf("not yet listed:\n%s", out)
		}
		return err
	})
	wm.identity(t)
	return wm
}

// identity is wm's stable node ID in coord, what its agent labels its containers with.
func (wm *workmachine) identity(t testing.TB) string {
	if wm.id != "" {
		return wm.id
	}
	var nodes []api.Node
	out, err := wm.ml.ctl(wm.ml.coord, "node", "list", "--json")
	if err == nil {
		err = json.Unmarshal([]byte(out), &nodes)
	}
	for _, n := range nodes {
		if n.Name == wm.name {
			wm.id = n.ID
		}
	}
	if wm.id == "" {
		t.Errorf("%s's node ID: %v (not in coord's node list?)", wm.name, err)
	}
	return wm.id
}

func (wm *workmachine) start(ml *meshLab, agentArgs ...string) {
	wm.proc = wm.host.StartShared(nil, ml.meshctl, append([]string{"node", "--coord", ml.coord.url(), "--auth-key", ml.wmKey,
		"--state", wm.state, "--hostname", wm.name}, agentArgs...)...)
}

// removeAll stops the agent and removes every workspace and service it left: they outlive agents.
func (wm *workmachine) removeAll(t testing.TB) {
	wm.proc.Kill()
	rt := wm.runtime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := rt.List(ctx)
	for _, s := range l {
		if err := rt.Delete(ctx, s.Name); err != nil {
			t.Errorf("cleanup: %s on %s: %v", s.Name, wm.name, err)
		}
	}
	if err != nil {
		t.Errorf("cleanup: %s: %v", wm.name, err)
	}
	svcs, err := rt.ListServices(ctx)
	envs := map[string]bool{}
	for _, s := range svcs {
		envs[s.EnvID] = true
		if err := rt.DeleteService(ctx, s.ID); err != nil {
			t.Errorf("cleanup: service %s on %s: %v", s.ID, wm.name, err)
		}
	}
	for id := range envs {
		if err := rt.DeleteVolumes(ctx, id); err != nil {
			t.Errorf("cleanup: volumes of %s on %s: %v", id, wm.name, err)
		}
	}
	if err != nil {
		t.Errorf("cleanup: %s's services: %v", wm.name, err)
	}
}

// runtime is the machine's containerd runtime as the agent sees it, for checks.
func (wm *workmachine) runtime(t testing.TB) *ctrd.Runtime {
	rt := &ctrd.Runtime{Machine: wm.name, Identity: wm.identity(t), Dir: filepath.Join(wm.state, "workspaces")}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// pid is the init process of a running workspace on wm.
func (wm *workmachine) pid(t testing.TB, name string) int {
	t.Helper()
	var pid int
	eventually(t, 30*time.Second, name+" running on "+wm.name, func() error {
		l, err := wm.runtime(t).List(context.Background())
		for _, s := range l {
			if s.Name == name && s.State == ctrd.StateRunning {
				pid = s.PID
				return nil
			}
		}
		return fmt.Errorf("not running: %+v %v", l, err)
	})
	return pid
}

// inside runs a command inside a workspace's namespaces (as `docker exec` would).
func inside(pid int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", fmt.Sprint(pid), "-m", "-u", "-n", "-p", "--"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in pid %d: %v: %s", strings.Join(args, " "), pid, err, out)
	}
	return string(out), nil
}

func (ml *meshLab) workspace(t testing.TB, name string) api.Workspace {
	t.Helper()
	var list []api.Workspace
	if err := json.Unmarshal([]byte(ml.mustCtl(ml.coord, "ws", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	for _, w := range list {
		if w.Name == name {
			return w
		}
	}
	t.Fatalf("no workspace %s in ws list", name)
	return api.Workspace{}
}

// wsGreeting checks the greeting of a workspace's wsecho on addr, reached from h.
func wsGreeting(h *lab.Host, addr, name string) error {
	return greeting(h, addr, "hello from "+name+"\n")
}

// udpEcho sends a datagram from h to addr and checks it comes back.
func udpEcho(h *lab.Host, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h.DialContext(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping over the mesh")); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err == nil && string(buf[:n]) != "ping over the mesh" {
		err = fmt.Errorf("udp echo read %q", buf[:n])
	}
	return err
}

// TestWorkspaces: two workmachines and a laptop on the mesh, a real containerd. A workspace
// created with meshctl on wm1 is reached from the laptop by name (TCP, UDP, ping) and from a
// workspace on wm2; files in the home and workspace directory survive stop and start; two
// workspaces of one user share a home; the agent's death does not touch the workspace and
// its successor adopts it; delete leaves nothing behind; bad requests are refused.
func TestWorkspaces(t *testing.T) {
	importEchoImage(t)
	ml := newMeshLab(t)
	wm1, wm2 := ml.workmachine(t, "wm1"), ml.workmachine(t, "wm2")
	lp := ml.laptop(t, "lp", ml.in.PublicHost("lp"))

	start := time.Now()
	out := ml.mustCtl(ml.coord, "ws", "create", "api", "--machine", "wm1", "--image", echoImage, "--memory", "256m")
	t.Logf("ws create api → running in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	api1 := ml.workspace(t, "api")
	if api1.State != "running" {
		t.Fatalf("api: state %q after ws create returned", api1.State)
	}

	// The laptop reaches it by name, over TCP (meshctl nc and the kernel), UDP and ping.
	eventually(t, 30*time.Second, "lp → api by name", func() error {
		out, err := lp.meshctl(t, ml.meshctl, "nc", "api", "8080")
		if err == nil && out != "hello from api\n" {
			err = fmt.Errorf("read %q", out)
		}
		return err
	})
	eventually(t, 10*time.Second, "lp → api by address (kernel TCP)", func() error {
		return wsGreeting(lp.host, api1.IPv4+":8080", "api")
	})
	eventually(t, 10*time.Second, "lp → api UDP", func() error { return udpEcho(lp.host, api1.IPv4+":8081") })
	if _, err := lp.host.Run(context.Background(), "busybox", "ping", "-c", "1", "-W", "3", api1.IPv4); err != nil {
		t.Errorf("ping api from the laptop: %v", err)
	}

	// Its output, from its machine over the mesh.
	eventually(t, 10*time.Second, "ws logs api from the laptop", func() error {
		out, err := lp.meshctl(t, ml.meshctl, "--coord", ml.coord.url(), "--token", ml.token, "ws", "logs", "api", "--tail", "1")
		if err == nil && !strings.Contains(out, "wsecho on api") {
			err = fmt.Errorf("read %q", out)
		}
		return err
	})

	// A workspace on wm2 reaches api on wm1.
	ml.mustCtl(ml.coord, "ws", "create", "web", "--machine", "wm2", "--image", echoImage)
	webPID := wm2.pid(t, "web")
	eventually(t, 20*time.Second, "web (wm2) → api (wm1)", func() error {
		out, err := inside(webPID, "busybox", "nc", "-w", "2", api1.IPv4, "8080")
		if err == nil && !strings.Contains(out, "hello from api") {
			err = fmt.Errorf("read %q", out)
		}
		return err
	})

	// Files in the home and the workspace directory survive stop and start.
	pid := wm1.pid(t, "api")
	user := api1.Owner
	if _, err := inside(pid, "sh", "-c", fmt.Sprintf("echo kept > /home/%s/note && echo code > /home/%s/workspaces/api/main.go", user, user)); err != nil {
		t.Fatal(err)
	}
	if out := ml.mustCtl(ml.coord, "ws", "stop", "api"); !strings.Contains(out, "workspace api is stopped; its files are kept") {
		t.Errorf("ws stop ends without saying so:\n%s", out)
	}
	if got := ml.workspace(t, "api").State; got != "stopped" {
		t.Errorf("after ws stop: %s", got)
	}
	ml.mustCtl(ml.coord, "ws", "start", "api")
	pid = wm1.pid(t, "api")
	if out, err := inside(pid, "cat", "/home/"+user+"/note", "/home/"+user+"/workspaces/api/main.go"); err != nil || out != "kept\ncode\n" {
		t.Errorf("files after stop/start: %q, %v", out, err)
	}

	// A second workspace of the same user on wm1 shares the home.
	ml.mustCtl(ml.coord, "ws", "create", "api2", "--machine", "wm1", "--image", echoImage)
	if out, err := inside(wm1.pid(t, "api2"), "cat", "/home/"+user+"/note"); err != nil || out != "kept\n" {
		t.Errorf("api2 does not share api's home: %q, %v", out, err)
	}

	// kill -9 the agent: the workspace keeps serving; a new agent adopts it, same PID.
	wm1.proc.Kill()
	time.Sleep(time.Second)
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("api's process died with its agent: %v", err)
	}
	wm1.start(ml)
	eventually(t, 60*time.Second, "lp → api after the agent restarted", func() error {
		return wsGreeting(lp.host, api1.IPv4+":8080", "api")
	})
	if again := wm1.pid(t, "api"); again != pid {
		t.Errorf("the restarted agent restarted api: pid %d, was %d", again, pid)
	}

	// Delete leaves no namespace, veth, route, container or snapshot; the home stays.
	cfg := ctrd.NetConfig(ctrd.Spec{ID: api1.ID, IPv4: netip.MustParseAddr(api1.IPv4)})
	ml.mustCtl(ml.coord, "ws", "delete", "api")
	eventually(t, 30*time.Second, "api gone from wm1", func() error {
		l, err := wm1.runtime(t).List(context.Background())
		for _, s := range l {
			if s.Name == "api" {
				return fmt.Errorf("still there: %+v", s)
			}
		}
		if err == nil && wsnet.Exists(cfg) {
			err = fmt.Errorf("netns %s still there", cfg.Netns)
		}
		return err
	})
	routes, _ := wm1.host.Run(context.Background(), "ip", "route", "show", "table", "all")
	links, _ := wm1.host.Run(context.Background(), "ip", "link")
	if strings.Contains(routes, api1.IPv4+" ") || strings.Contains(links, cfg.HostIf) {
		t.Errorf("left behind on wm1:\n%s\n%s", routes, links)
	}
	if _, err := os.Stat(filepath.Join(wm1.state, "workspaces", "home", user, "note")); err != nil {
		t.Errorf("the shared home went with the workspace: %v", err)
	}

	// Bad requests: an image that does not exist fails with its reason and leaves nothing
	// half-made; a duplicate name or an unknown machine is refused.
	// (The registry named is the lab's internet host, which serves no registry: no DNS, no
	// traffic beyond the lab.)
	out, err := ml.ctl(ml.coord, "ws", "create", "ghost", "--machine", "wm1", "--image", ml.in.Addr.String()+"/no/such:image", "--timeout", "25s")
	if err == nil || !strings.Contains(err.Error(), "failed") {
		t.Errorf("ws create with a missing image: %v\n%s", err, out)
	}
	if l, _ := wm1.runtime(t).List(context.Background()); len(l) != 1 {
		t.Errorf("after a failed create wm1 has %+v, want only api2", l)
	}
	for _, args := range [][]string{
		{"ws", "create", "web", "--machine", "wm1", "--image", echoImage},
		{"ws", "create", "other", "--machine", "wm9", "--image", echoImage},
	} {
		if out, err := ml.ctl(ml.coord, args...); err == nil {
			t.Errorf("meshctl %s: accepted:\n%s", strings.Join(args, " "), out)
		} else {
			t.Logf("meshctl %s: %v", strings.Join(args, " "), err)
		}
	}

	// With coord down, running workspaces stay reachable.
	api2 := ml.workspace(t, "api2")
	ml.coord.proc.Kill()
	if err := wsGreeting(lp.host, api2.IPv4+":8080", "api2"); err != nil {
		t.Errorf("lp → api2 with coord down: %v", err)
	}
}
