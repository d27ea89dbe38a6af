package ctl

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"meshwork.dev/overlay/lab"
	"meshwork.dev/workspace/wsnet"
)

// TestWorkspaceWall: a workspace made with meshctl on a workmachine reaches the lab's
// internet (through the machine's NAT) and answers the mesh, but not its machine (LAN,
// internet-side and mesh addresses, its gateway), cloud metadata at 169.254.169.254 or a
// private-range host on the machine's LAN; started with --allow-lan, the machine opens that
// range and nothing more. A link the workspace's root plants in the shared home makes the
// next workspace's set-up fail, saying so, with nothing outside the home touched.
func TestWorkspaceWall(t *testing.T) {
	importEchoImage(t)
	ml := newMeshLab(t)
	wm := ml.workmachine(t, "hwall-wm1")
	lp := ml.laptop(t, "hwall-lp", ml.in.PublicHost("hwall-lp"))

	// The machine's LAN: a host holding a private address and the cloud metadata address.
	lan := ml.l.Network("hwlan")
	wmLAN := wm.host.Attach(lan)
	db := ml.l.Host("hwall-db")
	dbLAN := db.Attach(lan)
	db.DefaultRoute(wmLAN)
	db.AddAddrs(lan.Name(), "10.77.0.5/32", "169.254.169.254/32")
	wm.host.Route(netip.MustParsePrefix("10.77.0.0/16"), dbLAN)
	wm.host.Route(netip.MustParsePrefix("169.254.169.254/32"), dbLAN)
	serveGreeting(t, db, 80)
	serveGreeting(t, wm.host, 9000) // a service of the machine's own, on every address

	ml.mustCtl(ml.coord, "ws", "create", "api", "--machine", wm.name, "--image", echoImage)
	api1 := ml.workspace(t, "api")
	pid := wm.pid(t, "api")
	walled := map[string]string{
		"the machine's LAN address":           wmLAN.String() + " 9000",
		"the machine's internet-side address": wm.host.Addr(ml.in.Net).String() + " 9000",
		"the machine's mesh address":          meshAddr(t, wm.host).String() + " 9000",
		"the workspace's gateway":             wsnet.GatewayIPv4.String() + " 9000",
		"cloud metadata":                      "169.254.169.254 80",
		"a private-range host":                "10.77.0.5 80",
	}
	checkWalled := func(when string, whats ...string) {
		t.Helper()
		for _, what := range whats {
			if out, err := inside(pid, "sh", "-c", "busybox nc -w 2 "+walled[what]+" </dev/null"); err == nil && strings.Contains(out, "hello") {
				t.Errorf("%s: the workspace reached %s (%s): %q", when, what, walled[what], out)
			}
		}
	}
	checkWalled("by default", "the machine's LAN address", "the machine's internet-side address",
		"the machine's mesh address", "the workspace's gateway", "cloud metadata", "a private-range host")
	reachesInternet(t, pid, ml.in.Addr, wm.host.Addr(ml.in.Net))
	// Answers to a connection made to the workspace over the mesh, and its DNS, still work.
	eventually(t, 30*time.Second, "lp → api over the mesh", func() error {
		return wsGreeting(lp.host, api1.IPv4+":8080", "api")
	})
	if out, err := inside(pid, "busybox", "nslookup", "hwall-lp.mesh.internal", "100.100.100.100"); err != nil || !strings.Contains(out, "100.64.") {
		t.Errorf("the workspace resolves a mesh name: %q, %v", out, err)
	}

	// The admin opens 10.77.0.0/16: that range only, the machine stays walled.
	wm.proc.Kill()
	wm.start(ml, "--allow-lan", "10.77.0.0/16")
	eventually(t, 60*time.Second, "the workspace → 10.77.0.5 with --allow-lan 10.77.0.0/16", func() error {
		out, err := inside(pid, "sh", "-c", "busybox nc -w 2 10.77.0.5 80 </dev/null")
		if err == nil && !strings.Contains(out, "hello from hwall-db") {
			err = fmt.Errorf("read %q", out)
		}
		return err
	})
	checkWalled("with --allow-lan 10.77.0.0/16", "the machine's LAN address", "the machine's mesh address", "cloud metadata")
	reachesInternet(t, pid, ml.in.Addr, wm.host.Addr(ml.in.Net))

	// The workspace's root plants a link to a host directory where the next workspace's
	// mount point goes; that workspace fails, naming the link, and the directory is untouched.
	outside := t.TempDir()
	user := api1.Owner
	if _, err := inside(pid, "ln", "-s", outside, "/home/"+user+"/workspaces/api2"); err != nil {
		t.Fatal(err)
	}
	out, err := ml.ctl(ml.coord, "ws", "create", "api2", "--machine", wm.name, "--image", echoImage, "--timeout", "25s")
	if err == nil || !strings.Contains(err.Error()+out, "symbolic link") {
		t.Errorf("ws create over a planted link: %v\n%s", err, out)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("the agent made %s in %s, behind the link", ents[0].Name(), outside)
	}
	if fi, err := os.Stat(outside); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("the agent chowned %s, behind the link: %v", outside, err)
	}
	if _, err := os.Lstat(filepath.Join(wm.state, "workspaces", "home", user, "workspaces", "api2")); err != nil {
		t.Errorf("the planted link went: %v", err)
	}
}

// reachesInternet checks the workspace reaches the lab internet's HTTP server, which sees
// the machine's address (NAT).
func reachesInternet(t *testing.T, pid int, server, machine netip.Addr) {
	t.Helper()
	eventually(t, 20*time.Second, "the workspace → the internet", func() error {
		out, err := inside(pid, "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc -w 3 `+server.String()+" 80")
		if err == nil && !strings.HasSuffix(strings.TrimSpace(out), machine.String()) {
			err = fmt.Errorf("read %q, want the machine's %v at the end", out, machine)
		}
		return err
	})
}

// meshAddr is the workmachine's mesh IPv4, on its TUN.
func meshAddr(t *testing.T, h *lab.Host) netip.Addr {
	t.Helper()
	link, err := h.Netlink().LinkByName("meshwork0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.Netlink().AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		t.Fatalf("no IPv4 on %s's meshwork0: %v", h.Name(), err)
	}
	a, _ := netip.AddrFromSlice(addrs[0].IP.To4())
	return a
}
