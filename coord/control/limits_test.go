package control

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
)

// TestReportsCapped: what a machine reports of itself (endpoints, OS, host name) is kept
// within the state's caps: a client reporting more joins and updates, and what is stored is
// cut to the caps, not copied whole into every replica and every peer's map.
func TestReportsCapped(t *testing.T) {
	l := &local{f: fsm.New(t.Logf)}
	l.must(t, "cluster.init", fsm.ClusterInit{ULA: "fd00:1:2::/48"})
	l.must(t, "user.create", fsm.User{ID: "u", Name: "u", Role: fsm.RoleAdmin})
	ak := keys.New(keys.AuthKey)
	l.must(t, "authkey.create", fsm.AuthKey{ID: ak.ID, UserID: "u", Hash: ak.Hash(), Reusable: true})
	s := &Server{Backend: l}

	long := strings.Repeat("x", 10_000)
	req := &tailcfg.RegisterRequest{NodeKey: key.NewNode().Public(), Auth: &tailcfg.RegisterResponseAuth{AuthKey: ak.String()},
		Hostinfo: &tailcfg.Hostinfo{Hostname: long, OS: long}}
	if _, err := s.register(httptest.NewRequest("POST", "/machine/register", nil), key.NewMachine().Public(), req); err != nil {
		t.Fatalf("register with a long host name and OS: %v", err)
	}
	nodes := l.f.Store().Nodes("")
	if len(nodes) != 1 || len(nodes[0].OS) != fsm.MaxOS || len(nodes[0].Name) > 63 {
		t.Fatalf("registered %+v; want one node, OS cut to %d bytes", nodes, fsm.MaxOS)
	}

	self := nodes[0]
	mreq := &tailcfg.MapRequest{DiscoKey: key.NewDisco().Public(), Hostinfo: &tailcfg.Hostinfo{OS: long}}
	for i := range 1000 {
		mreq.Endpoints = append(mreq.Endpoints, netip.MustParseAddrPort(fmt.Sprintf("198.18.%d.%d:41641", i/250, i%250)))
	}
	if err := s.update(context.Background(), self, mreq); err != nil {
		t.Fatalf("update with 1,000 endpoints: %v", err)
	}
	n := l.f.Store().Node(self.Name)
	if len(n.Endpoints) != fsm.MaxEndpoints || n.Endpoints[0] != "198.18.0.0:41641" || len(n.OS) != fsm.MaxOS {
		t.Errorf("stored %d endpoints (first %q), OS of %d bytes; want the first %d, OS cut to %d",
			len(n.Endpoints), n.Endpoints[0], len(n.OS), fsm.MaxEndpoints, fsm.MaxOS)
	}
}
