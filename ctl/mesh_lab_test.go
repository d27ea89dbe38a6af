package ctl

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/node"
	"meshwork.dev/overlay/lab"
)

// laptop is a lab host running the meshctl daemon.
type laptop struct {
	name   string
	host   *lab.Host
	state  string
	daemon *lab.Proc
}

// meshctl runs meshctl on the laptop against its daemon.
func (lp *laptop) meshctl(t testing.TB, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := lp.host.Command(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "MESHCTL_SOCKET="+filepath.Join(lp.state, "meshctl.sock"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s: meshctl %s: %v: %s", lp.name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// ncGreeting runs `meshctl nc host 9000` on the laptop and checks that the greeting service of
// the machine called name answered.
func (lp *laptop) ncGreeting(t *testing.T, bin, host, name string) error {
	out, err := lp.meshctl(t, bin, "nc", host, "9000")
	if want := "hello from " + name + "\n"; err == nil && out != want {
		err = fmt.Errorf("read %q, want %q", out, want)
	}
	return err
}

// serveGreeting answers every TCP connection to port (any address) inside h with
// "hello from NAME".
func serveGreeting(t testing.TB, h *lab.Host, port int) {
	ln, err := h.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello from %s\n", h.Name())
			c.Close()
		}
	}()
}

// meshLab is a coord on the lab's internet, a reusable auth key for laptops and one for
// workmachines (tagged tag:workmachine).
type meshLab struct {
	*coordLab
	in    *lab.Internet
	coord *replicaHost
	key   string
	wmKey string
}

func newMeshLab(t testing.TB) *meshLab {
	cl := newCoordLab(t)
	in := cl.l.Internet()
	coordHost := in.PublicHost("coord")
	coordIP := coordHost.Addr(in.Net)
	cl.admin = in.PublicHost("ops")
	r := &replicaHost{name: "coord", host: coordHost, addr: coordIP, state: filepath.Join(t.TempDir(), "coord")}
	r.args = []string{"coord", "--id", "coord", "--state", r.state, "--http", coordIP.String() + ":8080", "--cluster", coordIP.String() + ":7000",
		"--secret-key-file", secretKeyFile(t)}
	cl.replicas["coord"] = r
	cl.start("coord", "", "")
	cl.token = adminKey(t, r.state)
	var k, wk api.NewAuthKey
	if err := json.Unmarshal([]byte(cl.mustCtl(r, "authkey", "create", "--reusable", "--json")), &k); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(cl.mustCtl(r, "authkey", "create", "--reusable", "--tag", fsm.WorkmachineTag, "--json")), &wk); err != nil {
		t.Fatal(err)
	}
	return &meshLab{coordLab: cl, in: in, coord: r, key: k.Key, wmKey: wk.Key}
}

// secretKeyFile writes a new secret key (what --secret-key-file reads) and returns its path.
func secretKeyFile(t testing.TB) string {
	k := make([]byte, 32)
	rand.Read(k)
	path := filepath.Join(t.TempDir(), "secret.key")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// laptop starts a daemon on h, a greeting service on its loopback port 9000, and joins it.
func (ml *meshLab) laptop(t testing.TB, name string, h *lab.Host) *laptop {
	return ml.laptopAt(t, name, h, ml.coord.url())
}

// laptopAt is laptop with the coord address(es) to give meshctl up, and flags for the
// daemon.
func (ml *meshLab) laptopAt(t testing.TB, name string, h *lab.Host, coord string, daemonArgs ...string) *laptop {
	return ml.laptopWith(t, name, h, coord, ml.key, daemonArgs...)
}

// laptopWith is laptopAt joining with authKey (a machine of that key's user).
func (ml *meshLab) laptopWith(t testing.TB, name string, h *lab.Host, coord, authKey string, daemonArgs ...string) *laptop {
	lp := &laptop{name: name, host: h, state: filepath.Join(t.TempDir(), name)}
	lp.daemon = h.Start(nil, ml.meshctl, append([]string{"daemon", "--state", lp.state}, daemonArgs...)...)
	daemonUp(t, lp.state)
	serveGreeting(t, h, 9000)
	start := time.Now()
	eventually(t, 60*time.Second, name+" up", func() error {
		_, err := lp.meshctl(t, ml.meshctl, "up", "--coord", coord, "--auth-key", authKey, "--hostname", name)
		return err
	})
	t.Logf("meshctl up on %s: %v", name, time.Since(start).Round(time.Millisecond))
	return lp
}

// TestMeshLaptops: a coord, laptop a on the open network, b behind a NAT router and c whose
// UDP is blocked (so only the DERP relay over TCP reaches it) join with `meshctl up`; every
// pair opens TCP by name; status reports direct and relayed paths as they are.
func TestMeshLaptops(t *testing.T) {
	ml := newMeshLab(t)
	cl, in := ml.coordLab, ml.in
	router := cl.l.Router("r1", in.Net)
	c := in.PublicHost("c")
	c.DropUDP()
	laptops := []*laptop{ml.laptop(t, "a", in.PublicHost("a")), ml.laptop(t, "b", router.LANHost("b")), ml.laptop(t, "c", c)}

	for _, from := range laptops {
		for _, to := range laptops {
			if from == to {
				continue
			}
			eventually(t, 30*time.Second, from.name+" → "+to.name+".mesh.internal", func() error {
				return from.ncGreeting(t, cl.meshctl, to.name+".mesh.internal", to.name)
			})
		}
	}

	// a reaches b (behind NAT) directly once they have talked; c only through the relay.
	paths := func() map[string]node.Peer {
		out, err := laptops[0].meshctl(t, cl.meshctl, "status", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var s node.Summary
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatal(err)
		}
		m := map[string]node.Peer{}
		for _, p := range s.Peers {
			m[p.Name] = p
		}
		return m
	}
	eventually(t, 30*time.Second, "a's path to b is direct", func() error {
		laptops[0].meshctl(t, cl.meshctl, "ping", "b")
		if p := paths()["b"]; p.Path != "direct" {
			return fmt.Errorf("path to b: %+v", p)
		}
		return nil
	})
	laptops[0].meshctl(t, cl.meshctl, "ping", "c")
	if p := paths()["c"]; p.Path != "relayed" {
		t.Errorf("a's path to c (UDP blocked) = %+v; want relayed", p)
	}
	out, _ := laptops[0].meshctl(t, cl.meshctl, "status")
	t.Logf("meshctl status on a:\n%s", out)

	// As root the daemon runs a kernel TUN: any program on a reaches b's mesh address,
	// TCP and ping, through the machine's own stack.
	var s node.Summary
	out, _ = laptops[1].meshctl(t, cl.meshctl, "status", "--json")
	json.Unmarshal([]byte(out), &s)
	bIP := s.Self.IPs[0]
	eventually(t, 10*time.Second, "kernel TCP a → b's mesh address", func() error {
		return greeting(laptops[0].host, net.JoinHostPort(bIP, "9000"), "hello from b\n")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := laptops[0].host.Run(ctx, "busybox", "ping", "-c", "2", "-W", "5", bIP); err != nil {
		t.Errorf("ping a → b over the mesh: %v\n%s", err, out)
	}
}

// greeting dials addr with a kernel socket inside h, half-closes (a server that echoes until
// then finishes) and checks what it reads.
func greeting(h *lab.Host, addr, want string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	b, err := io.ReadAll(c)
	if err == nil && string(b) != want {
		err = fmt.Errorf("read %q, want %q", b, want)
	}
	return err
}

// TestMeshReplicaFailover: laptops given all three replicas keep their mesh when the replica
// they talk to is killed — a laptop joining afterwards is seen by them — and keep
// exchanging traffic when every replica is down.
func TestMeshReplicaFailover(t *testing.T) {
	cl := newCoordLab(t)
	rs := cl.threeReplicas()
	var k api.NewAuthKey
	if err := json.Unmarshal([]byte(cl.mustCtl(rs[0], "authkey", "create", "--reusable", "--json")), &k); err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, r := range rs {
		urls = append(urls, r.url())
	}
	ml := &meshLab{coordLab: cl, key: k.Key}
	join := func(name string) *laptop {
		h := cl.l.Host(name)
		h.Attach(cl.lan)
		h.DefaultRoute(rs[1].addr) // tailscale wants one; nothing routes beyond the LAN here
		return ml.laptopAt(t, name, h, strings.Join(urls, ","))
	}
	nc := func(from, to *laptop) error { return from.ncGreeting(t, cl.meshctl, to.name, to.name) }
	a, b := join("a"), join("b")
	eventually(t, 30*time.Second, "a → b", func() error { return nc(a, b) })

	// Both laptops talk to c1 (the first that answers). Kill it; a laptop joining now is
	// registered through another replica, and a and b learn of it from their new streams.
	rs[0].proc.Kill()
	c := join("c")
	eventually(t, 30*time.Second, "a → c after c1 died", func() error { return nc(a, c) })
	eventually(t, 30*time.Second, "c → b", func() error { return nc(c, b) })

	// With every replica down, established peers keep exchanging traffic.
	rs[1].proc.Kill()
	rs[2].proc.Kill()
	for range 3 {
		if err := nc(a, b); err != nil {
			t.Fatalf("a → b with all replicas down: %v", err)
		}
		time.Sleep(time.Second)
	}
}

// TestRelayMesh: two laptops without UDP must relay through DERP; one cannot reach the
// first replica, so they are homed on different replicas' relays, which forward to each
// other.
func TestRelayMesh(t *testing.T) {
	cl := newCoordLab(t)
	rs := cl.threeReplicas()
	var k api.NewAuthKey
	if err := json.Unmarshal([]byte(cl.mustCtl(rs[0], "authkey", "create", "--reusable", "--json")), &k); err != nil {
		t.Fatal(err)
	}
	urls := strings.Join([]string{rs[0].url(), rs[1].url(), rs[2].url()}, ",")
	ml := &meshLab{coordLab: cl, key: k.Key}
	laptopOn := func(name string) *lab.Host {
		h := cl.l.Host(name)
		h.Attach(cl.lan)
		h.DefaultRoute(rs[2].addr)
		h.DropUDP()
		return h
	}
	xh, yh := laptopOn("x"), laptopOn("y")
	yh.Cut(rs[0].addr) // y reaches neither c1's API nor its relay
	x := ml.laptopAt(t, "x", xh, urls)
	y := ml.laptopAt(t, "y", yh, urls)
	for _, p := range [][2]*laptop{{x, y}, {y, x}} {
		eventually(t, 45*time.Second, p[0].name+" → "+p[1].name+" through two meshed relays", func() error {
			return p[0].ncGreeting(t, cl.meshctl, p[1].name, p[1].name)
		})
	}
	out, _ := x.meshctl(t, cl.meshctl, "status")
	t.Logf("status on x:\n%s", out)
}

// serveHTTP answers every HTTP request to port inside h with "hello from NAME over http".
func serveHTTP(t *testing.T, h *lab.Host, port int) {
	ln, err := h.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s over http\n", h.Name())
	})}
	t.Cleanup(func() { srv.Close() })
	go srv.Serve(ln)
}

// status is the laptop's meshctl status --json.
func (lp *laptop) status(t *testing.T, bin string) node.Summary {
	t.Helper()
	out, err := lp.meshctl(t, bin, "status", "--json")
	var s node.Summary
	if err == nil {
		err = json.Unmarshal([]byte(out), &s)
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestMeshNamesForPrograms: programs on a laptop, not only meshctl, reach peers by name. On a
// userspace laptop they go through the daemon's SOCKS5 proxy (curl --socks5-hostname); on a
// TUN laptop the OS resolver asks MagicDNS (getent, busybox wget), still answers other names
// from the machine's own server, and gets its original resolv.conf back on meshctl down.
func TestMeshNamesForPrograms(t *testing.T) {
	machine, _ := os.ReadFile("/etc/resolv.conf")
	ml := newMeshLab(t)
	in := ml.in
	peerHost := in.PublicHost("peer")
	serveHTTP(t, peerHost, 8080)
	peer := ml.laptop(t, "peer", peerHost)
	peerIP := peer.status(t, ml.meshctl).Self.IPs[0]

	tunHost := in.PublicHost("tun")
	// The machine's own resolver: the lab's internet DNS, which knows example.test.
	in.AddRecord("example.test", in.Addr)
	own := fmt.Sprintf("# the machine's own\nnameserver %v\noptions timeout:2\n", in.Addr)
	if err := os.WriteFile(tunHost.ResolvConf(), []byte(own), 0o644); err != nil {
		t.Fatal(err)
	}
	tun := ml.laptop(t, "tun", tunHost)
	user := ml.laptopAt(t, "user", in.PublicHost("user"), ml.coord.url(), "--userspace")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := func(h *lab.Host, name string, args ...string) (string, error) {
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second) // busybox wget -T crashes; bound it here
		defer ccancel()
		return h.Run(cctx, name, args...)
	}
	want := "hello from peer over http\n"

	t.Run("userspace laptop through SOCKS5", func(t *testing.T) {
		s := user.status(t, ml.meshctl)
		if s.SOCKS5 != "127.0.0.1:1055" {
			t.Fatalf("status socks5 = %q, want 127.0.0.1:1055", s.SOCKS5)
		}
		if out, _ := user.meshctl(t, ml.meshctl, "status"); !strings.Contains(out, "SOCKS5 proxy: 127.0.0.1:1055") {
			t.Errorf("meshctl status does not show the proxy:\n%s", out)
		}
		for _, host := range []string{"peer", "peer.mesh.internal", peerIP} {
			eventually(t, 30*time.Second, "curl --socks5-hostname to "+host, func() error {
				out, err := run(user.host, "curl", "-sS", "--max-time", "10", "--socks5-hostname", s.SOCKS5, "http://"+host+":8080/")
				if err == nil && out != want {
					err = fmt.Errorf("read %q, want %q", out, want)
				}
				return err
			})
		}
		// A mesh name no peer has gets SOCKS5's "host unreachable" at once (no other
		// resolver is asked about it).
		start := time.Now()
		out, err := run(user.host, "curl", "-sS", "--max-time", "10", "--socks5-hostname", s.SOCKS5, "http://nosuchpeer.mesh.internal:8080/")
		if err == nil {
			t.Errorf("curl to a name on no peer succeeded: %q", out)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("refusing a name on no peer took %v", d)
		}
		if s := tun.status(t, ml.meshctl); s.SOCKS5 != "" {
			t.Errorf("a TUN laptop serves SOCKS5 on %q; want none", s.SOCKS5)
		}
	})

	t.Run("TUN laptop with the OS resolver", func(t *testing.T) {
		if s := tun.status(t, ml.meshctl); s.DNS != "/etc/resolv.conf → 100.100.100.100" {
			t.Errorf("status dns = %q", s.DNS)
		}
		conf, _ := os.ReadFile(tunHost.ResolvConf())
		if !strings.Contains(string(conf), "nameserver 100.100.100.100\nnameserver "+in.Addr.String()+"\nsearch mesh.internal\n") {
			t.Errorf("the laptop's resolv.conf:\n%s", conf)
		}
		for _, name := range []string{"peer", "peer.mesh.internal"} {
			eventually(t, 20*time.Second, "getent hosts "+name, func() error {
				out, err := run(tunHost, "getent", "hosts", name)
				if f := strings.Fields(out); err == nil && (len(f) == 0 || f[0] != peerIP) {
					err = fmt.Errorf("getent hosts %s = %q, want %s", name, out, peerIP)
				}
				return err
			})
			out, err := run(tunHost, "busybox", "wget", "-q", "-O", "-", "http://"+name+":8080/")
			if err != nil || out != want {
				t.Errorf("busybox wget http://%s:8080/ = %q, %v; want %q", name, out, err, want)
			}
		}
		// Names outside the mesh: MagicDNS refuses them, the machine's own server answers.
		if out, err := run(tunHost, "getent", "hosts", "example.test"); err != nil || !strings.HasPrefix(out, in.Addr.String()) {
			t.Errorf("getent hosts example.test = %q, %v; want %v from the machine's own server", out, err, in.Addr)
		}

		if _, err := tun.meshctl(t, ml.meshctl, "down"); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(tunHost.ResolvConf()); string(b) != own {
			t.Errorf("after meshctl down the laptop's resolv.conf is\n%s\nwant the original\n%s", b, own)
		}
		if out, err := run(tunHost, "getent", "hosts", "peer"); err == nil {
			t.Errorf("after meshctl down, peer still resolves: %q", out)
		}

		// Up again, then the daemon stops (SIGTERM): the original is back too.
		if _, err := tun.meshctl(t, ml.meshctl, "up", "--coord", ml.coord.url()); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(tunHost.ResolvConf()); !strings.Contains(string(b), "nameserver 100.100.100.100") {
			t.Fatalf("after up again the laptop's resolv.conf is\n%s", b)
		}
		tun.daemon.Stop()
		if b, _ := os.ReadFile(tunHost.ResolvConf()); string(b) != own {
			t.Errorf("after the daemon stopped the laptop's resolv.conf is\n%s\nwant the original\n%s", b, own)
		}
	})
	if b, _ := os.ReadFile("/etc/resolv.conf"); string(b) != string(machine) {
		t.Errorf("this machine's /etc/resolv.conf changed during the test:\n%s", b)
	}
}
