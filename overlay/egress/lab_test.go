package egress_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"meshwork.dev/overlay/egress"
	"meshwork.dev/overlay/lab"
	"meshwork.dev/workspace/wsnet"
)

// egressLab is an internet (echo + DNS logger), exits on it, and a workmachine on it with
// NAT for its workspaces.
type egressLab struct {
	l   *lab.Lab
	in  *lab.Internet
	wm  *lab.Host
	wg  string // stock wireguard-go
	tag string // unique per lab: interface names share wireguard-go's socket directory
}

func newEgressLab(t testing.TB) *egressLab {
	l := lab.New(t)
	if _, err := exec.LookPath("wg"); err != nil {
		t.Skipf("needs wg (wireguard-tools: run scripts/deps.sh)")
	}
	b := make([]byte, 2)
	rand.Read(b)
	e := &egressLab{l: l, in: l.Internet(), wg: lab.WireGuardGo(t), tag: hex.EncodeToString(b)}
	e.wm = e.in.PublicHost("egx-wm")
	e.wm.AddAddrs("lo", "100.64.0.1/32") // the machine's mesh address, as its TUN would hold it
	if err := e.wm.Do(func() error { return wsnet.EnableNAT("egx-mesh0") }); err != nil {
		t.Fatal(err)
	}
	return e
}

// workspace makes a workspace namespace on the workmachine.
func (e *egressLab) workspace(t testing.TB, ip string, ip6 ...string) wsnet.Config {
	b := make([]byte, 4)
	rand.Read(b)
	id := hex.EncodeToString(b)
	c := wsnet.Config{Netns: "egx-ws-" + id, HostIf: wsnet.HostIfPrefix + id, IPv4: netip.MustParseAddr(ip)}
	if len(ip6) > 0 {
		c.IPv6 = netip.MustParseAddr(ip6[0])
	}
	t.Cleanup(func() { e.wm.Do(func() error { return wsnet.Teardown(c) }) })
	if err := e.wm.Do(func() error { _, err := wsnet.Setup(c); return err }); err != nil {
		t.Fatal(err)
	}
	return c
}

// exit is an external WireGuard exit: stock wireguard-go and wg on a host of the internet,
// masquerading what comes out of its tunnel.
type exit struct {
	e      *egressLab
	host   *lab.Host
	dev    string
	key    egress.PrivateKey
	inner  netip.Prefix // its address in the tunnel; the workspace gets the next one
	peer   egress.PublicKey
	proc   *lab.Proc
	public netip.Addr
}

func (e *egressLab) exit(t testing.TB, name string, inner string, peer egress.PublicKey) *exit {
	key, err := egress.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	x := &exit{e: e, host: e.in.PublicHost(name), dev: name + "-" + e.tag, key: key,
		inner: netip.MustParsePrefix(inner), peer: peer}
	x.public = x.host.Addr(e.in.Net)
	x.host.SetSysctl("net/ipv4/ip_forward", "1")
	nft := x.host.Command(t.Context(), "nft", "-f", "-")
	nft.Stdin = strings.NewReader(fmt.Sprintf("table ip egx {\n chain post {\n type nat hook postrouting priority srcnat;\n oifname %q masquerade\n }\n}\n", e.in.Net.Name()))
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("exit %s masquerade: %v: %s", name, err, out)
	}
	x.start(t)
	return x
}

// start runs wireguard-go and configures it with wg, as an exit's operator would.
func (x *exit) start(t testing.TB) {
	x.proc = x.host.Start([]string{"WG_PROCESS_FOREGROUND=1"}, x.e.wg, "-f", x.dev)
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, []byte(x.key.Base64()), 0o600)
	ctx := t.Context()
	var err error
	for range 50 { // until wireguard-go made the interface
		if _, err = x.host.Run(ctx, "wg", "set", x.dev, "private-key", keyFile, "listen-port", "51820",
			"peer", x.peer.String(), "allowed-ips", x.wsAddr().Addr().String()+"/32"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"addr", "add", x.inner.String(), "dev", x.dev}, {"link", "set", x.dev, "up"}} {
		if _, err := x.host.Run(ctx, "ip", args...); err != nil {
			t.Fatal(err)
		}
	}
}

// wsAddr is the workspace's address in this exit's tunnel.
func (x *exit) wsAddr() netip.Prefix { return netip.PrefixFrom(x.inner.Addr().Next(), 32) }

// spec is what the workspace's tunnel to x needs, as a wg-quick file would give it.
func (x *exit) spec(ours egress.PrivateKey) egress.Spec {
	return egress.Spec{Name: x.host.Name(), PrivateKey: ours, PeerKey: x.key.Public(),
		Endpoint:  netip.AddrPortFrom(x.public, 51820).String(),
		Addresses: []netip.Prefix{x.wsAddr()}, DNS: []netip.Addr{x.e.in.Addr}}
}

func (e *egressLab) verification(exitIP netip.Addr) egress.Verification {
	return egress.Verification{EchoURL: e.in.URL(), ExitIP: exitIP, Resolver: netip.AddrPortFrom(e.in.Addr, 53),
		DNSZone: "probe.egx.test", DNSLogURL: e.in.DNSURL(), Timeout: 2 * time.Second}
}

// echo is what the internet's echo service sees of a GET from inside workspace c.
func echo(ctx context.Context, c wsnet.Config, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return wsnet.Dial(ctx, c, network, addr)
		}}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// wmCounter counts, on the internet host, every packet that arrives from the workmachine's own
// address: what leaves by its uplink (NAT) rather than by an exit.
type wmCounter struct{ in *lab.Internet }

func (e *egressLab) counter(t testing.TB) wmCounter {
	rules := fmt.Sprintf(`table ip egx {
	counter fromwm {}
	chain pre {
		type filter hook prerouting priority -300;
		ip saddr %v counter name "fromwm"
	}
}
`, e.wm.Addr(e.in.Net))
	nft := e.in.Host.Command(t.Context(), "nft", "-f", "-")
	nft.Stdin = strings.NewReader(rules)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("counter on the internet host: %v: %s", err, out)
	}
	return wmCounter{e.in}
}

var packetsRE = regexp.MustCompile(`packets (\d+)`)

func (w wmCounter) packets(t testing.TB, reset bool) int {
	verb := "list"
	if reset {
		verb = "reset"
	}
	out, err := w.in.Host.Run(t.Context(), "nft", verb, "counter", "ip", "egx", "fromwm")
	if err != nil {
		t.Fatal(err)
	}
	m := packetsRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("counter: %s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func eventually(t testing.TB, limit time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pin(t testing.TB, e *egressLab, c wsnet.Config, spec egress.Spec) *egress.Tunnel {
	t.Helper()
	spec.Logf = t.Logf
	var tun *egress.Tunnel
	if err := e.wm.Do(func() (err error) { tun, err = egress.Pin(c, spec); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return tun
}

// TestPinnedEgress drives a workspace's egress through an exit as its user would notice it:
// the internet sees the exit, DNS arrives from the exit only, a dead exit stops everything
// (nothing reaches the internet from the workmachine, even after the workspace reroutes
// itself), the exit coming back restores it, another exit takes over live, and unpinning
// gives the machine's NAT back. A second, unpinned workspace leaves by NAT throughout.
func TestPinnedEgress(t *testing.T) {
	e := newEgressLab(t)
	ctx := t.Context()
	ours, _ := egress.NewPrivateKey()
	x1 := e.exit(t, "egx-x1", "10.99.1.1/24", ours.Public())
	x2 := e.exit(t, "egx-x2", "10.99.2.1/24", ours.Public())
	ws, other := e.workspace(t, "100.64.0.7", "fd7a:115c:a1e0::7"), e.workspace(t, "100.64.0.8")
	wmAddr := e.wm.Addr(e.in.Net).String()
	for _, c := range []wsnet.Config{ws, other} {
		if got, err := echo(ctx, c, e.in.URL()); err != nil || got != wmAddr {
			t.Fatalf("unpinned %s: echo saw %q (%v), want the workmachine's %s", c.Netns, got, err, wmAddr)
		}
	}
	fromWM := e.counter(t)

	tun := pin(t, e, ws, x1.spec(ours))
	t.Run("pinned: the exit's address, DNS from the exit only", func(t *testing.T) {
		eventually(t, 20*time.Second, "verified egress through "+x1.host.Name(), func() error {
			return egress.Verify(ctx, ws, e.verification(x1.public))
		})
		if got, err := echo(ctx, ws, e.in.URL()); err != nil || got != x1.public.String() {
			t.Errorf("pinned: echo saw %q (%v), want the exit's %v", got, err, x1.public)
		}
		for _, q := range e.in.Queries() {
			if strings.HasSuffix(q.Name, "probe.egx.test") && q.From.Addr() != x1.public {
				t.Errorf("DNS query %s from %v, not from the exit %v", q.Name, q.From, x1.public)
			}
		}
		meshReachable(t, e, ws)
		assertTable(t, ws, tun.Name())
		if got, err := echo(ctx, other, e.in.URL()); err != nil || got != wmAddr {
			t.Errorf("the unpinned workspace: echo saw %q (%v), want the workmachine's %s", got, err, wmAddr)
		}
		fromWM.packets(t, true)
	})

	t.Run("exit down: fails closed", func(t *testing.T) {
		x1.proc.Kill()
		err := egress.Verify(ctx, ws, e.verification(x1.public))
		if !egress.IsCheck(err, egress.CheckConnectivity) {
			t.Errorf("Verify with the exit down = %v, want a failed %s check", err, egress.CheckConnectivity)
		}
		assertBlocked(t, e, ws)
		// A root process in the workspace points the default route back at eth0: still nothing.
		out, err := exec.Command("ip", "netns", "exec", ws.Netns, "ip", "route", "replace", "default",
			"via", wsnet.GatewayIPv4.String(), "dev", wsnet.InsideIf, "onlink").CombinedOutput()
		if err != nil {
			t.Fatalf("reroute: %v: %s", err, out)
		}
		assertBlocked(t, e, ws)
		if n := fromWM.packets(t, false); n != 0 {
			t.Errorf("the internet host got %d packets from the workmachine's address while the exit was down", n)
		}
	})

	t.Run("exit back: recovers", func(t *testing.T) {
		if err := tun.Update(x1.spec(ours)); err != nil { // the agent re-applies the spec: routes back
			t.Fatal(err)
		}
		x1.start(t)
		eventually(t, 30*time.Second, "verified egress after the exit came back", func() error {
			return egress.Verify(ctx, ws, e.verification(x1.public))
		})
	})

	t.Run("another exit, live", func(t *testing.T) {
		if err := tun.Update(x2.spec(ours)); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "verified egress through "+x2.host.Name(), func() error {
			return egress.Verify(ctx, ws, e.verification(x2.public))
		})
		if got, err := echo(ctx, ws, e.in.URL()); err != nil || got != x2.public.String() {
			t.Errorf("after Update: echo saw %q (%v), want %v", got, err, x2.public)
		}
		if n := fromWM.packets(t, false); n != 0 {
			t.Errorf("the internet host got %d packets from the workmachine's address while pinned", n)
		}
	})

	t.Run("unpinned: the machine's NAT again", func(t *testing.T) {
		for range 2 {
			if err := tun.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := echo(ctx, ws, e.in.URL()); err != nil || got != wmAddr {
			t.Errorf("unpinned: echo saw %q (%v), want the workmachine's %s", got, err, wmAddr)
		}
		err := egress.Verify(ctx, ws, e.verification(x2.public))
		if !egress.IsCheck(err, egress.CheckExitIP) {
			t.Errorf("Verify against the exit after unpinning = %v, want a failed %s check", err, egress.CheckExitIP)
		}
		if n := fromWM.packets(t, false); n == 0 {
			t.Errorf("the counter saw nothing from the workmachine after unpinning: it proves nothing")
		}
		out, _ := exec.Command("ip", "netns", "exec", ws.Netns, "ip", "-6", "route", "show", "default").CombinedOutput()
		if !strings.Contains(string(out), "via fe80::1 dev eth0") || strings.Contains(string(out), "unreachable") {
			t.Errorf("IPv6 default route after Close: %q, want via fe80::1 dev eth0 again", out)
		}
		out, _ = exec.Command("ip", "netns", "exec", ws.Netns, "nft", "list", "tables").CombinedOutput()
		if strings.Contains(string(out), egress.Table) {
			t.Errorf("table %s still in the workspace after Close: %s", egress.Table, out)
		}
	})
}

// assertTable compares the workspace's fail-closed table, as nft lists it, with the golden one.
func assertTable(t *testing.T, c wsnet.Config, tunIf string) {
	t.Helper()
	want, err := os.ReadFile("testdata/table.golden")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", c.Netns, "nft", "list", "table", "inet", egress.Table).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v: %s", err, out)
	}
	got := strings.ReplaceAll(string(out), tunIf, "TUN")
	if strings.TrimSpace(got) != strings.TrimSpace(string(want)) {
		t.Errorf("table in the workspace:\n%s\nwant (testdata/table.golden):\n%s", got, want)
	}
}

// assertBlocked: from inside ws, TCP to the internet and DNS get nowhere.
func assertBlocked(t *testing.T, e *egressLab, c wsnet.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if conn, err := wsnet.Dial(ctx, c, "tcp", netip.AddrPortFrom(e.in.Addr, 80).String()); err == nil {
		conn.Close()
		t.Errorf("TCP to the internet connected with the exit down")
	}
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return wsnet.Dial(ctx, c, network, netip.AddrPortFrom(e.in.Addr, 53).String())
	}}
	if _, err := res.LookupNetIP(ctx, "ip4", "leak.egx.test"); err == nil || !isTimeoutOrRefused(err) {
		t.Errorf("DNS with the exit down: %v, want no answer", err)
	}
}

func isTimeoutOrRefused(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && !de.IsNotFound
}

// meshReachable: a pinned workspace still reaches the mesh (its machine's mesh address) by eth0.
func meshReachable(t *testing.T, e *egressLab, c wsnet.Config) {
	t.Helper()
	ln, err := e.wm.Listen("tcp", "100.64.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	conn, err := wsnet.Dial(ctx, c, "tcp", ln.Addr().String())
	if err != nil {
		t.Errorf("pinned workspace → mesh %v: %v", ln.Addr(), err)
		return
	}
	conn.Close()
}

// TestVerifyCatchesDNSLeak: a pinned workspace whose resolver is a mesh address that asks the
// internet from the workmachine itself (as a node's MagicDNS forwards) passes the echo but
// fails Verify's DNS check, naming the leak; the mesh resolver's own address is closed to
// pinned workspaces.
func TestVerifyCatchesDNSLeak(t *testing.T) {
	e := newEgressLab(t)
	ours, _ := egress.NewPrivateKey()
	x := e.exit(t, "egx-x1", "10.99.1.1/24", ours.Public())
	ws := e.workspace(t, "100.64.0.7")
	e.wm.AddAddrs("lo", "100.100.100.100/32")
	for _, addr := range []string{"100.64.0.1:53", "100.100.100.100:53"} {
		dnsForwarder(t, e.wm, addr, netip.AddrPortFrom(e.in.Addr, 53).String())
	}
	pin(t, e, ws, x.spec(ours))
	good := e.verification(x.public)
	eventually(t, 20*time.Second, "verified egress", func() error { return egress.Verify(t.Context(), ws, good) })

	leaky := good
	leaky.Resolver = netip.MustParseAddrPort("100.64.0.1:53")
	err := egress.Verify(t.Context(), ws, leaky)
	if !egress.IsCheck(err, egress.CheckDNS) || !strings.Contains(err.Error(), e.wm.Addr(e.in.Net).String()) {
		t.Errorf("Verify through a resolver that asks from the workmachine = %v, want a failed %s check naming %v", err, egress.CheckDNS, e.wm.Addr(e.in.Net))
	}
	magic := good
	magic.Resolver = netip.MustParseAddrPort("100.100.100.100:53")
	err = egress.Verify(t.Context(), ws, magic)
	if !egress.IsCheck(err, egress.CheckDNS) || !strings.Contains(err.Error(), "not permitted") {
		t.Errorf("Verify through the mesh resolver = %v, want a failed %s check: the query dropped in the workspace", err, egress.CheckDNS)
	}
}

// dnsForwarder relays DNS over UDP from listen (inside h) to upstream, asking from h.
func dnsForwarder(t *testing.T, h *lab.Host, listen, upstream string) {
	pc, err := h.ListenPacket("udp", listen)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			up, err := h.DialContext(ctx, "udp", upstream)
			cancel()
			if err != nil {
				continue
			}
			up.SetDeadline(time.Now().Add(2 * time.Second))
			up.Write(buf[:n])
			if m, err := up.Read(buf); err == nil {
				pc.WriteTo(buf[:m], from)
			}
			up.Close()
		}
	}()
}

// TestUnpinWithoutTunnel: an agent that restarted has no Tunnel for a workspace it pinned
// before; Unpin alone gives the workspace its machine's NAT back, and it can be pinned again.
func TestUnpinWithoutTunnel(t *testing.T) {
	e := newEgressLab(t)
	ours, _ := egress.NewPrivateKey()
	x := e.exit(t, "egx-x1", "10.99.1.1/24", ours.Public())
	ws := e.workspace(t, "100.64.0.7")
	wmAddr := e.wm.Addr(e.in.Net).String()
	if err := egress.Unpin(ws); err != nil {
		t.Fatalf("Unpin of a workspace never pinned: %v", err)
	}
	for round := range 2 {
		tun := pin(t, e, ws, x.spec(ours))
		eventually(t, 20*time.Second, "verified egress", func() error {
			return egress.Verify(t.Context(), ws, e.verification(x.public))
		})
		if err := egress.Unpin(ws); err != nil {
			t.Fatal(err)
		}
		if got, err := echo(t.Context(), ws, e.in.URL()); err != nil || got != wmAddr {
			t.Errorf("round %d: after Unpin the echo saw %q (%v), want the workmachine's %s", round, got, err, wmAddr)
		}
		tun.Close()
	}
}

// TestTUNDownUp: a root process in the workspace sets the tunnel's TUN down and up again (its
// routes go with it); the device survives, and the agent's next Update (as every
// reconcile does) restores egress.
func TestTUNDownUp(t *testing.T) {
	e := newEgressLab(t)
	ours, _ := egress.NewPrivateKey()
	x := e.exit(t, "egx-x1", "10.99.1.1/24", ours.Public())
	ws := e.workspace(t, "100.64.0.7")
	tun := pin(t, e, ws, x.spec(ours))
	v := e.verification(x.public)
	eventually(t, 20*time.Second, "verified egress", func() error { return egress.Verify(t.Context(), ws, v) })
	for _, state := range []string{"down", "up"} {
		out, err := exec.Command("ip", "netns", "exec", ws.Netns, "ip", "link", "set", tun.Name(), state).CombinedOutput()
		if err != nil {
			t.Fatalf("TUN %s: %v: %s", state, err, out)
		}
		time.Sleep(1500 * time.Millisecond) // wireguard-go polls the TUN's state every second
	}
	if err := tun.Update(x.spec(ours)); err != nil { // routes via the TUN went with it down
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "verified egress after the TUN went down and up", func() error {
		return egress.Verify(t.Context(), ws, v)
	})
}
