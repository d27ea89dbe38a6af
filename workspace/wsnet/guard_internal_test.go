package wsnet

import (
	"net/netip"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

func TestGuardRules(t *testing.T) {
	a := netip.MustParseAddr
	rules := guardRules([]netip.Prefix{
		netip.MustParsePrefix("100.64.0.7/32"),         // a service of the environment
		netip.MustParsePrefix("fd7a:115c:a1e0::/120"),  // an allowed range
		netip.MustParsePrefix("::ffff:100.64.0.9/128"), // an IPv4-mapped one counts as IPv4
	})
	svc4, svc6 := a("100.64.0.20"), a("fd7a:115c:a1e0::20")
	for _, tt := range []struct {
		name string
		p    packet
		want string
	}{
		{"from the environment", packet{src: a("100.64.0.7"), dst: svc4}, "accept"},
		{"from an allowed range", packet{src: a("fd7a:115c:a1e0::99"), dst: svc6}, "accept"},
		{"from a mapped allowed address", packet{src: a("100.64.0.9"), dst: svc4}, "accept"},
		{"from another mesh address", packet{src: a("100.64.0.8"), dst: svc4}, "drop"},
		{"from outside the allowed range", packet{src: a("fd7a:115c:a1e0::199"), dst: svc6}, "drop"},
		{"UDP from elsewhere", packet{src: a("100.64.0.8"), dst: svc4, l4: unix.IPPROTO_UDP}, "drop"},
		{"ping from elsewhere", packet{src: a("100.64.0.8"), dst: svc4, l4: unix.IPPROTO_ICMP, icmpType: 8}, "drop"},
		{"answer to a connection it made", packet{src: a("1.1.1.1"), dst: svc4, ctState: expr.CtStateBitESTABLISHED}, "accept"},
		{"ICMP error about one", packet{src: a("1.1.1.1"), dst: svc4, ctState: expr.CtStateBitRELATED}, "accept"},
		{"new from elsewhere", packet{src: a("1.1.1.1"), dst: svc4, ctState: expr.CtStateBitNEW}, "drop"},
		{"loopback", packet{iif: "lo", src: a("127.0.0.1"), dst: a("127.0.0.1")}, "accept"},
		{"neighbour solicitation", packet{src: a("fe80::1"), dst: a("ff02::1:ff00:20"), l4: unix.IPPROTO_ICMPV6, icmpType: 135}, "accept"},
	} {
		if got := verdict(t, rules, tt.p); got != tt.want {
			t.Errorf("%s (%+v): %q, want %q", tt.name, tt.p, got, tt.want)
		}
	}
}
