package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// A Host is a network namespace: a machine of the lab.
type Host struct {
	lab  *Lab
	name string // short name in the lab ("a", "router")
	ns   string // namespace name, for `ip netns exec`
	h    netns.NsHandle
	nl   *netlink.Handle

	mu    sync.Mutex // guards addrs
	addrs map[*Network]netip.Addr
}

// Host makes a new host with only loopback, up.
func (l *Lab) Host(name string) *Host {
	l.t.Helper()
	h, err := l.newHost(name)
	if err != nil {
		l.t.Fatalf("lab: host %s: %v", name, err)
	}
	l.mu.Lock()
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	return h
}

func (l *Lab) newHost(name string) (*Host, error) {
	ns := l.nsName(name)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", ns, err, out)
	}
	h := &Host{lab: l, name: name, ns: ns, addrs: map[*Network]netip.Addr{}}
	if err := h.ownResolvConf(); err != nil {
		h.remove(l.t.Logf)
		return nil, err
	}
	var err error
	if h.h, err = netns.GetFromName(ns); err != nil {
		h.remove(l.t.Logf)
		return nil, err
	}
	if h.nl, err = netlink.NewHandleAt(h.h); err != nil {
		h.remove(l.t.Logf)
		return nil, err
	}
	lo, err := h.nl.LinkByName("lo")
	if err == nil {
		err = h.nl.LinkSetUp(lo)
	}
	if err != nil {
		h.remove(l.t.Logf)
		return nil, fmt.Errorf("loopback up: %w", err)
	}
	return h, nil
}

func (h *Host) remove(logf func(string, ...any)) {
	if h.nl != nil {
		h.nl.Close()
	}
	if h.h.IsOpen() {
		h.h.Close()
	}
	if out, err := exec.Command("ip", "netns", "del", h.ns).CombinedOutput(); err != nil {
		logf("lab: ip netns del %s: %v: %s", h.ns, err, out)
	}
	if err := os.RemoveAll(netnsEtc(h.ns)); err != nil {
		logf("lab: %v", err)
	}
}

// netnsEtc is the directory whose files `ip netns exec` bind-mounts over /etc for ns.
func netnsEtc(ns string) string { return filepath.Join("/etc/netns", ns) }

// ownResolvConf gives the host a resolv.conf of its own, a copy of the machine's: every
// process started with `ip netns exec` sees it at /etc/resolv.conf, so a program under test
// that rewrites its resolver (the daemon on a TUN) changes the host's, never the machine's.
func (h *Host) ownResolvConf() error {
	orig, err := os.ReadFile("/etc/resolv.conf")
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	dir := netnsEtc(h.ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), orig, 0o644)
}

// ResolvConf is the path of the file the host's processes see as /etc/resolv.conf.
func (h *Host) ResolvConf() string { return filepath.Join(netnsEtc(h.ns), "resolv.conf") }

// Name is the host's short name in the lab.
func (h *Host) Name() string { return h.name }

// Netns is the host's namespace name, as `ip netns exec` takes it.
func (h *Host) Netns() string { return h.ns }

// Handle is the host's namespace, for code that enters it (tsnet's TUN, nftables).
func (h *Host) Handle() netns.NsHandle { return h.h }

// Netlink is a netlink handle operating inside the host's namespace.
func (h *Host) Netlink() *netlink.Handle { return h.nl }

// Addr is the host's address on network n (invalid if not attached).
func (h *Host) Addr(n *Network) netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addrs[n]
}

// Do runs f on an OS thread inside the host's namespace. Sockets f creates stay in the
// namespace after Do returns.
func (h *Host) Do(f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("lab: current namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(h.h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("lab: enter %s: %w", h.ns, err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime throws it away rather than reuse it in h.
		return fmt.Errorf("lab: leave %s: %w", h.ns, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Listen listens inside the host's namespace (network as net.Listen takes it).
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket is net.ListenPacket inside the host's namespace.
func (h *Host) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := h.Do(func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// DialContext dials from inside the host's namespace.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		c, err = new(net.Dialer).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// SetSysctl writes a /proc/sys value inside the host (key as "net/ipv4/ip_forward").
func (h *Host) SetSysctl(key, value string) {
	h.lab.t.Helper()
	err := h.Do(func() error { return writeFile("/proc/sys/"+key, value) })
	if err != nil {
		h.lab.t.Fatalf("lab: %s: sysctl %s=%s: %v", h.name, key, value, err)
	}
}

// Route adds a route to dst via gw inside the host.
func (h *Host) Route(dst netip.Prefix, gw netip.Addr) {
	h.lab.t.Helper()
	r := &netlink.Route{Dst: prefixNet(dst), Gw: gw.AsSlice()}
	if err := h.nl.RouteAdd(r); err != nil {
		h.lab.t.Fatalf("lab: %s: route %v via %v: %v", h.name, dst, gw, err)
	}
}

// DefaultRoute sets the host's default route via gw. Every lab host should have one: some
// programs (tailscale) treat a machine without one as offline.
func (h *Host) DefaultRoute(gw netip.Addr) {
	h.lab.t.Helper()
	h.Route(netip.PrefixFrom(netip.IPv4Unspecified(), 0), gw)
}

// AddAddrs adds addresses ("10.77.0.5/32", "fd00:77::5/64") to the host's interface ifname,
// without duplicate address detection, so IPv6 ones are usable at once.
func (h *Host) AddAddrs(ifname string, addrs ...string) {
	h.lab.t.Helper()
	link, err := h.nl.LinkByName(ifname)
	if err != nil {
		h.lab.t.Fatalf("lab: %s: %v", h.name, err)
	}
	for _, a := range addrs {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			h.lab.t.Fatalf("lab: %s: address %q: %v", h.name, a, err)
		}
		addr.Flags = unix.IFA_F_NODAD
		if err := h.nl.AddrAdd(link, addr); err != nil {
			h.lab.t.Fatalf("lab: %s: address %s: %v", h.name, a, err)
		}
	}
}
