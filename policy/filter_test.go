package policy

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"tailscale.com/tailcfg"
)

func TestFilter(t *testing.T) {
	p, err := Parse([]byte(`{
		"groups": {"group:dev": ["alice"]},
		"acls": [
			{"action": "accept", "src": ["group:dev"], "dst": ["tag:server:22,8000-8999"]},
			{"action": "accept", "src": ["tag:server"], "dst": ["bob:*"]},
			{"action": "accept", "src": ["10.1.0.0/16"], "dst": ["ghost:80"]},
		],
	}`))
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr
	hosts := []Host{
		{Name: "alice-laptop", User: "alice", IPs: []netip.Addr{ip("100.64.0.1")}},
		{Name: "bob-laptop", User: "bob", IPs: []netip.Addr{ip("100.64.0.2")}},
		{Name: "db", User: "alice", Tags: []string{"tag:server"}, IPs: []netip.Addr{ip("100.64.0.3")}},
	}
	got, err := p.Filter(hosts)
	if err != nil {
		t.Fatal(err)
	}
	want := []tailcfg.FilterRule{
		{SrcIPs: []string{"100.64.0.1"}, DstPorts: []tailcfg.NetPortRange{
			{IP: "100.64.0.3", Ports: tailcfg.PortRange{First: 22, Last: 22}},
			{IP: "100.64.0.3", Ports: tailcfg.PortRange{First: 8000, Last: 8999}}}},
		{SrcIPs: []string{"100.64.0.3"}, DstPorts: []tailcfg.NetPortRange{{IP: "100.64.0.2", Ports: tailcfg.PortRangeAny}}},
		// the third rule names no existing host: no rule at all, rather than one for nobody
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("filter (-want +got):\n%s", diff)
	}
	if _, err := Parse([]byte(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["db:http"]}]}`)); err == nil {
		t.Errorf("a non-numeric port was accepted")
	}
}
