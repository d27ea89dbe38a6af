package wsnet_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"meshwork.dev/overlay/lab"
	"meshwork.dev/workspace/wsnet"
)

// newHost makes a lab host standing in for a workmachine, its loopback holding the machine's
// mesh addresses (the agent's TUN would; this kernel has no dummy links).
func newHost(t *testing.T) (*lab.Lab, *lab.Host) {
	t.Helper()
	l := lab.New(t)
	h := l.Host("wm")
	nl := h.Netlink()
	mesh, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"100.64.0.1/32", "fd7a:115c:a1e0::1/128"} {
		addr, _ := netlink.ParseAddr(a)
		addr.Flags = 0x02 // IFA_F_NODAD
		if err := nl.AddrAdd(mesh, addr); err != nil {
			t.Fatal(err)
		}
	}
	return l, h
}

func testConfig(t *testing.T) wsnet.Config {
	b := make([]byte, 4)
	rand.Read(b)
	id := hex.EncodeToString(b)
	return wsnet.Config{
		Netns:  "mwt-" + id,
		HostIf: wsnet.HostIfPrefix + id,
		IPv4:   netip.MustParseAddr("100.64.0.7"),
		IPv6:   netip.MustParseAddr("fd7a:115c:a1e0::7"),
	}
}

func setup(t *testing.T, h *lab.Host, c wsnet.Config) {
	t.Helper()
	t.Cleanup(func() {
		if err := h.Do(func() error { return wsnet.Teardown(c) }); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	for range 2 { // the second run must change nothing and fail nothing
		var path string
		err := h.Do(func() (err error) { path, err = wsnet.Setup(c); return err })
		if err != nil {
			t.Fatal(err)
		}
		if path != "/var/run/netns/"+c.Netns {
			t.Fatalf("Setup returned %q", path)
		}
	}
}

func ping(ctx context.Context, ns string, addr string) error {
	applet := "ping"
	if strings.Contains(addr, ":") {
		applet = "ping6"
	}
	args := []string{"netns", "exec", ns, "/bin/busybox", applet, "-c1", "-W2", addr}
	out, err := execCommand(ctx, "ip", args...)
	if err != nil {
		return errors.New(strings.TrimSpace(out) + ": " + err.Error())
	}
	return nil
}

func TestSetupPingTeardown(t *testing.T) {
	_, h := newHost(t)
	c := testConfig(t)
	setup(t, h, c)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, a := range []string{"100.64.0.7", "fd7a:115c:a1e0::7"} {
		if err := ping(ctx, h.Netns(), a); err != nil {
			t.Errorf("host → workspace %s: %v", a, err)
		}
	}
	for _, a := range []string{"100.64.0.1", "fd7a:115c:a1e0::1"} {
		if err := ping(ctx, c.Netns, a); err != nil {
			t.Errorf("workspace → host %s: %v", a, err)
		}
	}

	if err := h.Do(func() error { return wsnet.Teardown(c) }); err != nil {
		t.Fatal(err)
	}
	if err := h.Do(func() error { return wsnet.Teardown(c) }); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
	assertGone(t, h, c)
}

func assertGone(t *testing.T, h *lab.Host, c wsnet.Config) {
	t.Helper()
	if _, err := os.Stat("/var/run/netns/" + c.Netns); err == nil {
		t.Errorf("netns %s still there", c.Netns)
	}
	if _, err := h.Netlink().LinkByName(c.HostIf); err == nil {
		t.Errorf("veth %s still there", c.HostIf)
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.Netlink().RouteList(nil, family)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			if r.Dst != nil && (r.Dst.IP.Equal(c.IPv4.AsSlice()) || r.Dst.IP.Equal(c.IPv6.AsSlice())) {
				t.Errorf("route %v still there", r)
			}
		}
	}
}

func TestSetupRepairsMissingVeth(t *testing.T) {
	_, h := newHost(t)
	c := testConfig(t)
	setup(t, h, c)
	l, err := h.Netlink().LinkByName(c.HostIf)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Netlink().LinkDel(l); err != nil {
		t.Fatal(err)
	}
	if err := h.Do(func() error { _, err := wsnet.Setup(c); return err }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := ping(ctx, h.Netns(), "100.64.0.7"); err != nil {
		t.Errorf("after repair: %v", err)
	}
}

func TestSetupRejectsBadConfig(t *testing.T) {
	for _, c := range []wsnet.Config{
		{Netns: "", HostIf: "mwvx", IPv4: netip.MustParseAddr("100.64.0.9")},
		{Netns: "../etc", HostIf: "mwvx", IPv4: netip.MustParseAddr("100.64.0.9")},
		{Netns: "mw-x", HostIf: "mwv-too-long-for-linux", IPv4: netip.MustParseAddr("100.64.0.9")},
		{Netns: "mw-x", HostIf: "veth0", IPv4: netip.MustParseAddr("100.64.0.9")}, // outside the wall
		{Netns: "mw-x", HostIf: "mwvx"},
		{Netns: "mw-x", HostIf: "mwvx", IPv4: netip.MustParseAddr("fd00::1")},
	} {
		if _, err := wsnet.Setup(c); err == nil {
			t.Errorf("Setup(%+v) = nil error", c)
		}
	}
}

// TestNAT: a workspace reaches a LAN server that has no route back to mesh addresses only while
// NAT is on; the server sees the workmachine's LAN address.
func TestNAT(t *testing.T) {
	l, h := newHost(t)
	lan := l.Network("lan")
	h.Attach(lan)
	srv := l.Host("srv")
	srvAddr := srv.Attach(lan)
	c := testConfig(t)
	setup(t, h, c)
	t.Cleanup(func() { h.Do(wsnet.DisableNAT) })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	if err := ping(ctx, c.Netns, "100.64.0.1"); err != nil {
		t.Fatalf("workspace → host: %v", err)
	}
	if err := ping(ctx, c.Netns, srvAddr.String()); err == nil {
		t.Fatalf("workspace reached %v without NAT: the test proves nothing", srvAddr)
	}
	for range 2 {
		if err := h.Do(func() error { return wsnet.EnableNAT("mesh0") }); err != nil {
			t.Fatal(err)
		}
	}
	if err := ping(ctx, c.Netns, srvAddr.String()); err != nil {
		t.Errorf("with NAT: %v", err)
	}
	if err := ping(ctx, c.Netns, "100.64.0.1"); err != nil {
		t.Errorf("mesh traffic with NAT on: %v", err)
	}
	for range 2 {
		if err := h.Do(wsnet.DisableNAT); err != nil {
			t.Fatal(err)
		}
	}
	if err := ping(ctx, c.Netns, srvAddr.String()); err == nil {
		t.Errorf("workspace still reaches %v after DisableNAT", srvAddr)
	}
}
