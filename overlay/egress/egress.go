// Package egress pins a workspace's internet traffic to an exit: a WireGuard tunnel of its
// own (wireguard-go, its TUN inside the workspace's network namespace, its UDP socket in the
// host's), the workspace's default routes through it, and an nftables table in the
// workspace's namespace that drops everything else leaving it but mesh traffic, so that a
// broken tunnel fails closed; and Verify, which checks from inside the workspace that its
// traffic and DNS really leave by the exit.
package egress

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"meshwork.dev/coord/api"
)

// DefaultMTU is the tunnel's MTU when Spec.MTU is 0: WireGuard's, for an exit reached over
// a 1500-byte path.
const DefaultMTU = 1420

// DefaultKeepalive is the persistent keepalive when Spec.Keepalive is 0: it keeps the NAT
// mapping in front of a workmachine open, so the exit can always answer.
const DefaultKeepalive = 25 * time.Second

// A PrivateKey is our side's WireGuard (X25519) private key. It never prints.
type PrivateKey [32]byte

// A PublicKey is a WireGuard (X25519) public key; it prints in base64, as wg does.
type PublicKey [32]byte

// NewPrivateKey makes a random private key.
func NewPrivateKey() (PrivateKey, error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("egress: new key: %w", err)
	}
	return PrivateKey(k.Bytes()), nil
}

// ParsePrivateKey reads a base64 private key, as in a wg-quick file.
func ParsePrivateKey(s string) (PrivateKey, error) {
	b, err := parseKey(s)
	return PrivateKey(b), err
}

// ParsePublicKey reads a base64 public key, as in a wg-quick file.
func ParsePublicKey(s string) (PublicKey, error) {
	b, err := parseKey(s)
	return PublicKey(b), err
}

func parseKey(s string) ([32]byte, error) {
	var k [32]byte
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != 32 {
		return k, fmt.Errorf("key %q: want 32 bytes in base64, as `wg genkey` prints", redact(s))
	}
	copy(k[:], b)
	return k, nil
}

// redact shows only the start of what may be a secret.
func redact(s string) string {
	if len(s) > 4 {
		return s[:4] + "…"
	}
	return s
}

// Public is the public key of k.
func (k PrivateKey) Public() PublicKey {
	p, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil { // only for a wrong length, which a [32]byte cannot have
		panic(err)
	}
	return PublicKey(p.PublicKey().Bytes())
}

// String hides the key.
func (k PrivateKey) String() string { return "egress.PrivateKey(hidden)" }

// Base64 is the key as wg and wg-quick files write it.
func (k PrivateKey) Base64() string { return base64.StdEncoding.EncodeToString(k[:]) }

func (k PublicKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// IsZero reports whether k is unset.
func (k PrivateKey) IsZero() bool { return k == PrivateKey{} }

// IsZero reports whether k is unset.
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

// Spec is one exit as a workspace's tunnel needs it.
type Spec struct {
	Name       string         // the exit's name, for messages
	PrivateKey PrivateKey     // ours
	PeerKey    PublicKey      // the exit's
	Endpoint   string         // the exit's host:port (a name is resolved in the host's namespace)
	Addresses  []netip.Prefix // ours inside the tunnel (at least one)
	DNS        []netip.Addr   // resolvers reached through the tunnel: the workspace's resolv.conf
	MTU        int            // 0: DefaultMTU
	Keepalive  time.Duration  // 0: DefaultKeepalive; negative: none
	// Logf receives the tunnel's errors (a handshake that gets no answer); nil drops them.
	Logf func(format string, args ...any)
}

// Validate reports what is wrong with s, naming the field to fix.
func (s Spec) Validate() error {
	switch {
	case s.PrivateKey.IsZero():
		return fmt.Errorf("egress: exit %q: no private key: give the [Interface] PrivateKey of its wg-quick file", s.Name)
	case s.PeerKey.IsZero():
		return fmt.Errorf("egress: exit %q: no peer key: give the [Peer] PublicKey of its wg-quick file", s.Name)
	case s.Endpoint == "":
		return fmt.Errorf("egress: exit %q: no endpoint: give the [Peer] Endpoint (host:port)", s.Name)
	case len(s.Addresses) == 0:
		return fmt.Errorf("egress: exit %q: no tunnel address: give the [Interface] Address", s.Name)
	case s.MTU != 0 && (s.MTU < 1280 || s.MTU > 65535):
		return fmt.Errorf("egress: exit %q: MTU %d: give 1280 to 65535, or 0 for %d", s.Name, s.MTU, DefaultMTU)
	}
	if host, port, err := net.SplitHostPort(s.Endpoint); err != nil || host == "" {
		return fmt.Errorf("egress: exit %q: endpoint %q: give host:port, e.g. 203.0.113.9:51820", s.Name, s.Endpoint)
	} else if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("egress: exit %q: endpoint %q: port %q: give a UDP port number", s.Name, s.Endpoint, port)
	}
	for _, p := range s.Addresses {
		if !p.IsValid() {
			return fmt.Errorf("egress: exit %q: tunnel address %v: give an address with its length, e.g. 10.64.12.7/32", s.Name, p)
		}
	}
	for _, a := range s.DNS {
		if !a.IsValid() {
			return fmt.Errorf("egress: exit %q: DNS server %v: give an IP address", s.Name, a)
		}
	}
	return nil
}

func (s Spec) mtu() int {
	if s.MTU == 0 {
		return DefaultMTU
	}
	return s.MTU
}

func (s Spec) keepalive() int {
	switch {
	case s.Keepalive == 0:
		return int(DefaultKeepalive / time.Second)
	case s.Keepalive < 0:
		return 0
	}
	return max(1, int(s.Keepalive/time.Second))
}

// has reports whether s has a tunnel address of the family of a.
func (s Spec) has(v6 bool) bool {
	for _, p := range s.Addresses {
		if p.Addr().Is6() == v6 && !p.Addr().Is4In6() {
			return true
		}
	}
	return false
}

// ResolvConf is the workspace's /etc/resolv.conf while it is pinned: the exit's resolvers
// only, with no search domains (a bare name would be asked of the exit as <name>.<domain>).
// The workspace runtime writes it (workspace/ctrd writes resolv.conf into the workspace's
// run directory and bind-mounts it); Pin does not touch files. Without DNS in the exit, the
// file says so and names resolve nowhere: the mesh resolver is closed to a pinned
// workspace, since it would ask the workmachine's own upstream.
func (s Spec) ResolvConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# pinned to exit %s: names resolve through its tunnel only\n", s.Name)
	if len(s.DNS) == 0 {
		b.WriteString("# the exit gives no DNS server: add DNS = to its wg-quick file\n")
	}
	for _, a := range s.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	return b.String()
}

// SpecFromExit turns the wire form of an exit (coord/api.ExitSpec) into a Spec. Only
// WireGuard exits carry what a tunnel needs.
func SpecFromExit(x api.ExitSpec) (Spec, error) {
	s := Spec{Name: x.Name, Endpoint: x.Endpoint}
	if x.Kind != api.ExitWireGuard {
		return s, fmt.Errorf("egress: exit %q is of kind %q: only %q exits have a tunnel of their own", x.Name, x.Kind, api.ExitWireGuard)
	}
	var err error
	if s.PrivateKey, err = ParsePrivateKey(x.PrivateKey); err != nil {
		return s, fmt.Errorf("egress: exit %q: private %w", x.Name, err)
	}
	if s.PeerKey, err = ParsePublicKey(x.PeerPublicKey); err != nil {
		return s, fmt.Errorf("egress: exit %q: peer %w", x.Name, err)
	}
	for _, a := range strings.Split(x.Address, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(a))
		if err != nil {
			return s, fmt.Errorf("egress: exit %q: address %q: %w", x.Name, a, err)
		}
		s.Addresses = append(s.Addresses, p)
	}
	for _, d := range x.DNS {
		a, err := netip.ParseAddr(strings.TrimSpace(d))
		if err != nil {
			return s, fmt.Errorf("egress: exit %q: DNS %q: %w", x.Name, d, err)
		}
		s.DNS = append(s.DNS, a)
	}
	return s, s.Validate()
}
