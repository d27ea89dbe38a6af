package wsnet

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// packet is what the wall's rules look at.
type packet struct {
	iif, oif string
	src, dst netip.Addr
	reply    bool   // ct direction reply
	ctState  uint32 // ct state bits (expr.CtStateBit*)
	spoofed  bool   // the source address does not route back through iif
	l4       byte   // IPPROTO_*; TCP when zero
	icmpType byte
}

// verdict runs rules as the kernel would, on the expressions they use: "accept", "reject",
// or "" when no rule decides (the packet goes on: accepted by the chain's policy).
func verdict(t *testing.T, rules [][]expr.Any, p packet) string {
	t.Helper()
	for _, r := range rules {
		if v, ok := runRule(t, r, p); ok {
			return v
		}
	}
	return ""
}

func runRule(t *testing.T, r []expr.Any, p packet) (string, bool) {
	t.Helper()
	var reg []byte
	for _, e := range r {
		switch e := e.(type) {
		case *expr.Meta:
			reg = metaValue(t, e.Key, p)
		case *expr.Fib:
			reg = []byte{0, 0, 0, 7} // an interface index
			if p.spoofed {
				reg = []byte{0, 0, 0, 0}
			}
		case *expr.Ct:
			reg = []byte{0}
			if p.reply {
				reg[0] = ctDirReply
			}
			if e.Key == expr.CtKeySTATE {
				reg = binaryutil.NativeEndian.PutUint32(p.ctState)
			}
		case *expr.Payload:
			reg = payload(e, p)
		case *expr.Bitwise:
			for i := range reg[:e.Len] {
				reg[i] = reg[i]&e.Mask[i] ^ e.Xor[i]
			}
		case *expr.Cmp:
			if eq := bytes.Equal(reg[:len(e.Data)], e.Data); eq != (e.Op == expr.CmpOpEq) {
				return "", false
			}
		case *expr.Range:
			if bytes.Compare(reg, e.FromData) < 0 || bytes.Compare(reg, e.ToData) > 0 {
				return "", false
			}
		case *expr.Verdict:
			switch e.Kind {
			case expr.VerdictAccept:
				return "accept", true
			case expr.VerdictDrop:
				return "drop", true
			}
			t.Fatalf("verdict %v in a workspace chain", e.Kind)
		case *expr.Reject:
			return "reject", true
		default:
			t.Fatalf("expression %T: teach verdict it", e)
		}
	}
	return "", false
}

func metaValue(t *testing.T, key expr.MetaKey, p packet) []byte {
	switch key {
	case expr.MetaKeyNFPROTO:
		if p.dst.Is6() {
			return []byte{unix.NFPROTO_IPV6}
		}
		return []byte{unix.NFPROTO_IPV4}
	case expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME:
		b := make([]byte, unix.IFNAMSIZ)
		copy(b, map[bool]string{true: p.iif, false: p.oif}[key == expr.MetaKeyIIFNAME])
		return b
	case expr.MetaKeyL4PROTO:
		return []byte{max(p.l4, unix.IPPROTO_TCP)}
	}
	t.Fatalf("meta key %v: teach verdict it", key)
	return nil
}

// payload reads from an IPv4 or IPv6 header holding p's source and destination, or a
// transport header starting with p's ICMP type.
func payload(e *expr.Payload, p packet) []byte {
	hdr := make([]byte, 40)
	if e.Base == expr.PayloadBaseTransportHeader {
		hdr[0] = p.icmpType
	} else if p.dst.Is4() {
		copy(hdr[12:], p.src.AsSlice())
		copy(hdr[16:], p.dst.AsSlice())
	} else {
		copy(hdr[8:], p.src.AsSlice())
		copy(hdr[24:], p.dst.AsSlice())
	}
	return bytes.Clone(hdr[e.Offset : e.Offset+e.Len])
}

func TestWallRules(t *testing.T) {
	out, in := wallRules(Wall{MeshIf: "meshwork0"})
	a := netip.MustParseAddr
	for _, tt := range []struct {
		name string
		p    packet
		want string
	}{
		{"internet", packet{oif: "eth0", dst: a("1.1.1.1")}, ""},
		{"internet IPv6", packet{oif: "eth0", dst: a("2001:db8::1")}, ""},
		{"just past 172.16/12", packet{oif: "eth0", dst: a("172.32.0.1")}, ""},
		{"10/8", packet{oif: "eth0", dst: a("10.1.2.3")}, "reject"},
		{"172.16/12", packet{oif: "eth0", dst: a("172.31.255.255")}, "reject"},
		{"192.168/16", packet{oif: "eth0", dst: a("192.168.1.1")}, "reject"},
		{"cloud metadata", packet{oif: "eth0", dst: a("169.254.169.254")}, "reject"},
		{"CGNAT off the mesh", packet{oif: "eth0", dst: a("100.64.0.5")}, "reject"},
		{"ULA off the mesh", packet{oif: "eth0", dst: a("fd00::1")}, "reject"},
		{"IPv6 link-local", packet{oif: "eth0", dst: a("fe80::1")}, "reject"},
		{"multicast", packet{oif: "eth0", dst: a("239.1.1.1")}, "reject"},
		{"mesh peer", packet{oif: "meshwork0", dst: a("100.64.0.5")}, "accept"},
		{"mesh peer IPv6", packet{oif: "meshwork0", dst: a("fd7a:115c:a1e0::5")}, "accept"},
		{"MagicDNS", packet{oif: "meshwork0", dst: a("100.100.100.100"), l4: unix.IPPROTO_UDP}, "accept"},
		{"another workspace here", packet{oif: "mwv0123abcd", dst: a("100.64.0.8")}, "accept"},
		{"answer to a private-range client", packet{oif: "eth0", dst: a("10.1.2.3"), reply: true}, "accept"},
		{"a name like the mesh's", packet{oif: "meshwork01", dst: a("100.64.0.5")}, "reject"},
		{"spoofed source into the mesh", packet{oif: "meshwork0", dst: a("100.64.0.5"), spoofed: true}, "drop"},
		{"spoofed source to the internet", packet{oif: "eth0", dst: a("1.1.1.1"), spoofed: true}, "drop"},
		{"spoofed answer", packet{oif: "eth0", dst: a("10.1.2.3"), reply: true, spoofed: true}, "drop"},
	} {
		if got := verdict(t, out, tt.p); got != tt.want {
			t.Errorf("forward, %s (%+v): %q, want %q", tt.name, tt.p, got, tt.want)
		}
	}
	for _, tt := range []struct {
		name string
		p    packet
		want string
	}{
		{"TCP to the machine", packet{dst: a("198.51.100.7")}, "reject"},
		{"UDP to the machine's mesh address", packet{dst: a("100.64.0.1"), l4: unix.IPPROTO_UDP}, "reject"},
		{"ping the IPv6 gateway", packet{dst: a("fe80::1"), l4: unix.IPPROTO_ICMPV6, icmpType: 128}, "reject"},
		{"neighbour solicitation", packet{dst: a("ff02::1:ff00:1"), l4: unix.IPPROTO_ICMPV6, icmpType: 135}, "accept"},
		{"neighbour advertisement", packet{dst: a("fe80::1"), l4: unix.IPPROTO_ICMPV6, icmpType: 136}, "accept"},
		{"router solicitation", packet{dst: a("ff02::2"), l4: unix.IPPROTO_ICMPV6, icmpType: 133}, "reject"},
		{"answer to the machine", packet{dst: a("100.64.0.1"), reply: true}, "accept"},
		{"spoofed neighbour advertisement", packet{dst: a("fe80::1"), l4: unix.IPPROTO_ICMPV6, icmpType: 136, spoofed: true}, "drop"},
	} {
		if got := verdict(t, in, tt.p); got != tt.want {
			t.Errorf("input, %s (%+v): %q, want %q", tt.name, tt.p, got, tt.want)
		}
	}
}

func TestWallRulesAllow(t *testing.T) {
	out, in := wallRules(Wall{MeshIf: "meshwork0", Allow: []netip.Prefix{
		netip.MustParsePrefix("10.5.0.0/16"), netip.MustParsePrefix("fd12:3456::/32")}})
	for dst, want := range map[string]string{
		"10.5.9.9": "accept", "10.6.0.1": "reject", "169.254.169.254": "reject",
		"fd12:3456::9": "accept", "fd12:3457::9": "reject",
	} {
		if got := verdict(t, out, packet{oif: "eth0", dst: netip.MustParseAddr(dst)}); got != want {
			t.Errorf("forward to %s: %q, want %q", dst, got, want)
		}
	}
	if got := verdict(t, in, packet{dst: netip.MustParseAddr("10.5.0.1")}); got != "reject" {
		t.Errorf("an allowed range opened the machine itself: %q", got)
	}
}

// TestWallMatchesWorkspaceVeths: the base chains' match takes every name Setup accepts for a
// host-side veth, and no other interface.
func TestWallMatchesWorkspaceVeths(t *testing.T) {
	rule := [][]expr.Any{append(ifPrefix(expr.MetaKeyIIFNAME, HostIfPrefix), accept())}
	for name, want := range map[string]string{
		"mwv0123456789ab": "accept", "mwv1": "accept", "eth0": "", "mw": "", "meshwork0": "", "mwx1": "",
	} {
		if got := verdict(t, rule, packet{iif: name, dst: netip.MustParseAddr("1.1.1.1")}); got != want {
			t.Errorf("iif %s: %q, want %q", name, got, want)
		}
		valid := Config{Netns: "n", HostIf: name, IPv4: netip.MustParseAddr("100.64.0.7")}.Validate() == nil
		if valid && want != "accept" {
			t.Errorf("Setup takes host interface %s, which the wall does not cover", name)
		}
	}
}
