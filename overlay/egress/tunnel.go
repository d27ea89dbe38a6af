package egress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"meshwork.dev/workspace/wsnet"
)

// A Tunnel is a pinned workspace's WireGuard tunnel to its exit. Make it with Pin; Update
// changes the exit live; Close unpins the workspace.
type Tunnel struct {
	c    wsnet.Config
	name string         // the TUN's name inside the workspace's namespace
	ws   netns.NsHandle // the workspace's namespace; good until Close
	host netns.NsHandle // the namespace of the UDP socket; good until Close
	dev  *device.Device

	mu     sync.Mutex // guards spec and closed, and serialises Update and Close
	spec   Spec
	closed bool
}

// IfName is the name of the tunnel's TUN for the workspace whose namespace is netns: "mwe"
// and a hash of the namespace's name. It is unique on the machine, as wireguard-go's
// per-interface state (its UAPI socket path, if one is ever opened) wants.
func IfName(netns string) string {
	h := sha256.Sum256([]byte(netns))
	return "mwe" + hex.EncodeToString(h[:6])
}

// Pin gives the workspace c a tunnel to the exit spec and pins its egress to it: the TUN
// is created inside the workspace's namespace, the UDP socket in the calling thread's (the
// host's); the fail-closed table is installed before any route changes; then the tunnel's
// addresses, its default routes through the TUN and the mesh ranges via eth0. If Pin fails
// after the table went in, the table stays: the workspace's traffic is blocked (fail
// closed) until Pin succeeds or Unpin is called.
func Pin(c wsnet.Config, spec Spec) (*Tunnel, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	t := &Tunnel{c: c, name: IfName(c.Netns), spec: spec}
	if err := t.open(); err != nil {
		t.release()
		return nil, fmt.Errorf("egress pin %s to %s: %w", c.Netns, spec.Name, err)
	}
	return t, nil
}

func (t *Tunnel) open() error {
	var err error
	if t.host, err = wsnet.CurrentNS(); err != nil {
		return err
	}
	if t.ws, err = netns.GetFromName(t.c.Netns); err != nil {
		return fmt.Errorf("no network namespace %s: is the workspace running? %w", t.c.Netns, err)
	}
	if err := t.startDevice(); err != nil {
		return err
	}
	if err := applyTable(t.ws, t.name); err != nil {
		return err
	}
	return t.configure(nil)
}

// startDevice creates the TUN inside the workspace's namespace and runs wireguard-go on it,
// configured for t.spec and up.
func (t *Tunnel) startDevice() error {
	var td tun.Device
	err := wsnet.InNS(t.ws, func() (err error) {
		td, err = tun.CreateTUN(t.name, t.spec.mtu())
		return err
	})
	if err != nil {
		return fmt.Errorf("create TUN %s in %s: %w", t.name, t.c.Netns, err)
	}
	t.dev = device.NewDevice(&nsTUN{Device: td, ns: t.ws}, &nsBind{Bind: conn.NewDefaultBind(), ns: t.host}, logger(t.spec))
	uapi, err := uapiConfig(t.spec, true)
	if err != nil {
		return err
	}
	if err := t.dev.IpcSet(uapi); err != nil {
		return fmt.Errorf("configure the tunnel: %w", err)
	}
	if err := t.dev.Up(); err != nil {
		return fmt.Errorf("tunnel up: %w", err)
	}
	return nil
}

// Update points the tunnel at another exit (or the same one changed) live: keys, peer,
// endpoint, addresses and MTU. The workspace stays pinned throughout: on an error it is
// still blocked, never unpinned.
func (t *Tunnel) Update(spec Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return fmt.Errorf("egress update %s: the tunnel is closed: Pin again", t.c.Netns)
	}
	old := t.spec
	t.spec = spec
	uapi, err := uapiConfig(spec, old.PrivateKey != spec.PrivateKey)
	if err == nil {
		err = t.dev.IpcSet(uapi)
	}
	if err == nil {
		err = t.configure(old.Addresses)
	}
	if err != nil {
		return fmt.Errorf("egress update %s to %s: %w", t.c.Netns, spec.Name, err)
	}
	return nil
}

// Spec is the exit the tunnel goes to now.
func (t *Tunnel) Spec() Spec {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.spec
}

// Name is the TUN's name inside the workspace's namespace.
func (t *Tunnel) Name() string { return t.name }

// Close unpins the workspace: it stops the tunnel (its TUN goes with it), restores the
// default routes via eth0 and removes the fail-closed table. Closing twice is harmless.
func (t *Tunnel) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	err := unpin(t.ws, t.c)
	t.release()
	if err != nil {
		return fmt.Errorf("egress unpin %s: %w", t.c.Netns, err)
	}
	return nil
}

// release stops the device and closes the namespace handles.
func (t *Tunnel) release() {
	if t.dev != nil {
		t.dev.Close()
	}
	for _, h := range []netns.NsHandle{t.ws, t.host} {
		if h.IsOpen() {
			h.Close()
		}
	}
}

// Unpin undoes a pin left by a Tunnel that is gone (an agent that restarted): default
// routes via eth0 again, the fail-closed table removed. A workspace never pinned is fine.
func Unpin(c wsnet.Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	ws, err := netns.GetFromName(c.Netns)
	if err != nil {
		return fmt.Errorf("egress unpin %s: no network namespace: is the workspace running? %w", c.Netns, err)
	}
	defer ws.Close()
	if err := unpin(ws, c); err != nil {
		return fmt.Errorf("egress unpin %s: %w", c.Netns, err)
	}
	return nil
}

// uapiConfig is spec in wireguard-go's configuration protocol (what `wg set` sends): one
// peer, the exit, taking every address.
func uapiConfig(spec Spec, withKey bool) (string, error) {
	ep, err := resolveEndpoint(spec.Endpoint)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if withKey {
		fmt.Fprintf(&b, "private_key=%s\n", hex.EncodeToString(spec.PrivateKey[:]))
	}
	fmt.Fprintf(&b, "replace_peers=true\npublic_key=%s\nendpoint=%s\npersistent_keepalive_interval=%d\n",
		hex.EncodeToString(spec.PeerKey[:]), ep, spec.keepalive())
	b.WriteString("replace_allowed_ips=true\nallowed_ip=0.0.0.0/0\nallowed_ip=::/0\n")
	return b.String(), nil
}

// resolveEndpoint turns host:port into an address, resolving a name in the caller's namespace.
func resolveEndpoint(hostport string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return ap, nil
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: give host:port: %w", hostport, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ap, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ap) == 0 {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: cannot resolve %s: %v", hostport, host, err)
	}
	p, err := net.LookupPort("udp", port)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: port: %w", hostport, err)
	}
	return netip.AddrPortFrom(ap[0].Unmap(), uint16(p)), nil
}

func logger(spec Spec) *device.Logger {
	l := &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	if spec.Logf != nil {
		l.Errorf = func(format string, args ...any) { spec.Logf("egress "+spec.Name+": "+format, args...) }
	}
	return l
}

// nsTUN is a TUN that lives in another namespace than the process: wireguard-go asks its
// MTU by name with a socket of the calling thread's namespace, so MTU asks from inside ns.
type nsTUN struct {
	tun.Device
	ns netns.NsHandle
}

func (t *nsTUN) MTU() (mtu int, err error) {
	err = wsnet.InNS(t.ns, func() (err error) {
		mtu, err = t.Device.MTU()
		return err
	})
	return mtu, err
}

// nsBind opens its UDP sockets in the host's namespace, whichever goroutine asks. Pin opens
// them from the caller's thread; but wireguard-go may reopen them from its own goroutines
// (its TUN event reader brings a device that is down up), whose threads are in the
// process's namespace, which is not always the host's (a lab host's Do).
type nsBind struct {
	conn.Bind
	ns netns.NsHandle
}

func (b *nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = wsnet.InNS(b.ns, func() (err error) {
		fns, actual, err = b.Bind.Open(port)
		return err
	})
	return fns, actual, err
}
