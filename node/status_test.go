package node

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/types/views"
)

// TestStatusListsIPv6: a peer's own IPv6 shows beside its IPv4 even when it lies outside
// tailscale's ranges (a cluster's older /48); the workspace addresses it routes do not.
func TestStatusListsIPv6(t *testing.T) {
	pfx := netip.MustParsePrefix
	allowed := views.SliceOf([]netip.Prefix{pfx("100.64.0.1/32"), pfx("fd00:1:2::6440:1/128"), pfx("100.64.0.3/32"), pfx("fd00:1:2::6440:3/128")})
	routes := views.SliceOf([]netip.Prefix{pfx("100.64.0.3/32"), pfx("fd00:1:2::6440:3/128")})
	p := &ipnstate.PeerStatus{DNSName: "wm1.mesh.internal.", TailscaleIPs: []netip.Addr{netip.MustParseAddr("100.64.0.1")},
		AllowedIPs: &allowed, PrimaryRoutes: &routes}
	if diff := cmp.Diff([]string{"100.64.0.1", "fd00:1:2::6440:1"}, peer(p).IPs); diff != "" {
		t.Errorf("wm1's IPs (-want +got):\n%s", diff)
	}
}
