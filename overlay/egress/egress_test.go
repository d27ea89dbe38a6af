package egress_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"meshwork.dev/coord/api"
	"meshwork.dev/overlay/egress"
)

func TestKeys(t *testing.T) {
	k, err := egress.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	back, err := egress.ParsePrivateKey(k.Base64())
	if err != nil || back != k {
		t.Fatalf("ParsePrivateKey(Base64()) = %v, %v", back, err)
	}
	if s := fmt.Sprintf("%v %s %+v", k, k, egress.Spec{PrivateKey: k}); strings.Contains(s, k.Base64()) {
		t.Errorf("a private key printed: %s", s)
	}
	pub, err := egress.ParsePublicKey(k.Public().String())
	if err != nil || pub != k.Public() {
		t.Errorf("ParsePublicKey(Public().String()) = %v, %v", pub, err)
	}
	if _, err := egress.ParsePublicKey("c2hvcnQ="); err == nil {
		t.Errorf("a 5-byte key parsed")
	}
}

func exitSpec(t *testing.T) api.ExitSpec {
	k, _ := egress.NewPrivateKey()
	peer, _ := egress.NewPrivateKey()
	return api.ExitSpec{Name: "fra", Kind: api.ExitWireGuard, Endpoint: "203.0.113.9:51820",
		PeerPublicKey: peer.Public().String(), PrivateKey: k.Base64(),
		Address: "10.64.12.7/32, fd00:64::7/128", DNS: []string{"10.64.0.1"}, PublicIP: "203.0.113.9"}
}

func TestSpecFromExit(t *testing.T) {
	x := exitSpec(t)
	s, err := egress.SpecFromExit(x)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.64.12.7/32"), netip.MustParsePrefix("fd00:64::7/128")}
	if fmt.Sprint(s.Addresses) != fmt.Sprint(want) || s.Endpoint != x.Endpoint || s.PrivateKey.Base64() != x.PrivateKey {
		t.Errorf("SpecFromExit = %+v", s)
	}
	if got := s.ResolvConf(); !strings.Contains(got, "nameserver 10.64.0.1\n") || strings.Contains(got, "search") {
		t.Errorf("ResolvConf = %q", got)
	}
	for name, mutate := range map[string]func(*api.ExitSpec){
		"node kind":      func(x *api.ExitSpec) { x.Kind = api.ExitNode },
		"bad key":        func(x *api.ExitSpec) { x.PrivateKey = "nope" },
		"bad peer":       func(x *api.ExitSpec) { x.PeerPublicKey = "" },
		"bad address":    func(x *api.ExitSpec) { x.Address = "10.64.12.7" },
		"bad DNS":        func(x *api.ExitSpec) { x.DNS = []string{"resolver"} },
		"no port":        func(x *api.ExitSpec) { x.Endpoint = "203.0.113.9" },
		"empty endpoint": func(x *api.ExitSpec) { x.Endpoint = "" },
		"named port":     func(x *api.ExitSpec) { x.Endpoint = "exit.example:wg" },
	} {
		x := exitSpec(t)
		mutate(&x)
		if _, err := egress.SpecFromExit(x); err == nil {
			t.Errorf("%s: SpecFromExit accepted %+v", name, x)
		} else if strings.Contains(err.Error(), x.PrivateKey) && x.PrivateKey != "nope" {
			t.Errorf("%s: the error shows the private key: %v", name, err)
		}
	}
}

func TestVerificationValidate(t *testing.T) {
	good := egress.Verification{EchoURL: "http://198.18.0.1/", Resolver: netip.MustParseAddrPort("198.18.0.1:53"),
		DNSZone: "probe.example", DNSLogURL: "http://198.18.0.1/dns"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*egress.Verification){
		"no echo":     func(v *egress.Verification) { v.EchoURL = "" },
		"ftp echo":    func(v *egress.Verification) { v.EchoURL = "ftp://x/" },
		"no logger":   func(v *egress.Verification) { v.DNSLogURL = "" },
		"no resolver": func(v *egress.Verification) { v.Resolver = netip.AddrPort{} },
		"no zone":     func(v *egress.Verification) { v.DNSZone = "" },
	} {
		v := good
		mutate(&v)
		if err := v.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, v)
		}
	}
}

func TestIfName(t *testing.T) {
	a, b := egress.IfName("mw-1a2b3c"), egress.IfName("mw-1a2b3d")
	if a == b || len(a) > 15 || !strings.HasPrefix(a, "mwe") {
		t.Errorf("IfName: %q and %q", a, b)
	}
}

// FuzzSpecFromExit: whatever coord sends, SpecFromExit does not panic, and what it accepts
// is valid, prints no private key, and lists every DNS server in its resolv.conf.
func FuzzSpecFromExit(f *testing.F) {
	k, _ := egress.NewPrivateKey()
	f.Add(k.Base64(), k.Public().String(), "203.0.113.9:51820", "10.64.12.7/32, fd00::7/128", "10.64.0.1")
	f.Add("", "", "", "", "")
	f.Add("AAAA", "x", "[::1]:1", ",", "::1")
	f.Fuzz(func(t *testing.T, priv, peer, endpoint, address, dns string) {
		x := api.ExitSpec{Name: "f", Kind: api.ExitWireGuard, PrivateKey: priv, PeerPublicKey: peer,
			Endpoint: endpoint, Address: address, DNS: strings.Split(dns, ";")}
		s, err := egress.SpecFromExit(x)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted an invalid spec: %v", err)
		}
		if strings.Contains(fmt.Sprintf("%v %+v", s, s), s.PrivateKey.Base64()) {
			t.Fatalf("the spec prints its private key")
		}
		if n := strings.Count(s.ResolvConf(), "nameserver "); n != len(s.DNS) {
			t.Fatalf("resolv.conf has %d nameservers for %d DNS servers", n, len(s.DNS))
		}
	})
}
