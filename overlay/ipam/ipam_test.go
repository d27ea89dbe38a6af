package ipam

import (
	"net/netip"
	"testing"

	"tailscale.com/net/tsaddr"
)

func TestNext(t *testing.T) {
	tests := []struct{ in, want string }{
		{"100.64.0.1", "100.64.0.2"},
		{"100.100.99.255", "100.100.101.0"}, // skips the resolver's /24
		{"100.115.91.255", "100.115.94.0"},  // skips ChromeOS's /23
		{"100.127.255.254", "100.64.0.1"},   // wraps, skipping the last and first
	}
	for _, tt := range tests {
		if got := Next(netip.MustParseAddr(tt.in)); got.String() != tt.want {
			t.Errorf("Next(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
	for _, a := range []string{"100.64.0.0", "100.127.255.255", "100.100.100.100", "10.0.0.1", "100.128.0.1"} {
		if Usable(netip.MustParseAddr(a)) {
			t.Errorf("%s usable", a)
		}
	}
}

func TestULA(t *testing.T) {
	p := ULA
	if p.Bits() != 48 || p.Addr().As16()[0] != 0xfd || !tsaddr.IsTailscaleIP(p.Addr()) {
		t.Errorf("ULA = %v; want an fd00::/8 /48 that Tailscale clients take for their own", p)
	}
	v6 := IPv6(p, netip.MustParseAddr("100.64.1.2"))
	if !p.Contains(v6) || v6.As16()[12] != 100 || v6.As16()[15] != 2 || !tsaddr.IsTailscaleIP(v6) {
		t.Errorf("IPv6 = %v", v6)
	}
	if v6 == tsaddr.TailscaleServiceIPv6() || tsaddr.TailscaleViaRange().Contains(v6) || tsaddr.Tailscale4To6Range().Contains(v6) {
		t.Errorf("IPv6 = %v falls on an address Tailscale clients use for something else", v6)
	}
}
