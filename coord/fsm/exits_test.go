package fsm

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// wgExit is a WireGuard exit as the admin API stores it (its key sealed).
var wgExit = Exit{Name: "vpn", Kind: ExitWireGuard, Endpoint: "203.0.113.9:51820", PublicKey: "cGVlcg==",
	Address: "10.7.0.2/32", DNS: []string{"10.7.0.1"}, PrivateKey: "c2VhbGVk"}

// TestExits: exits are created, listed and pinned; a workspace cannot name an unknown exit
// (404 naming meshctl exit list); an exit in use cannot be removed (409 naming the
// workspaces and meshctl ws set-exit WS none), nor a node that is an exit; unpinning frees it.
func TestExits(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok("exit.create", wgExit)
	h.ok("exit.create", Exit{Name: "wm1-out", Kind: ExitNode, Node: "wm1"})
	if r := h.apply("exit.create", wgExit); !errors.Is(r.Err, ErrConflict) {
		t.Errorf("a second exit vpn: %v; want a conflict", r.Err)
	}
	r := h.apply("workspace.create", Workspace{ID: "w0", Name: "dev0", OwnerID: "u2", Machine: "wm1", Image: "img", Exit: "nope"})
	if !errors.Is(r.Err, ErrNotFound) || !strings.Contains(r.Err.Msg, "meshctl exit list") {
		t.Errorf("create pinned to an unknown exit: %v; want not found naming meshctl exit list", r.Err)
	}
	h.ok("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img", Exit: "vpn", EgressState: "verified"})
	h.ok("workspace.create", Workspace{ID: "w2", Name: "api", OwnerID: "u2", Machine: "wm1", Image: "img"})
	if w := h.f.Store().Workspace("dev"); w.Exit != "vpn" || w.EgressState != "" {
		t.Errorf("dev: exit %q, egress state %q; want vpn and nothing observed yet", w.Exit, w.EgressState)
	}
	if r := h.apply("workspace.exit", WorkspaceExit{Workspace: "api", Exit: "nope"}); !errors.Is(r.Err, ErrNotFound) || !strings.Contains(r.Err.Msg, "meshctl exit list") {
		t.Errorf("set-exit to an unknown exit: %v", r.Err)
	}
	h.ok("workspace.exit", WorkspaceExit{Workspace: "api", Exit: "vpn"})

	r = h.apply("exit.delete", ByName{Name: "vpn"})
	if !errors.Is(r.Err, ErrConflict) || !strings.Contains(r.Err.Msg, "dev") || !strings.Contains(r.Err.Msg, "api") ||
		!strings.Contains(r.Err.Msg, "meshctl ws set-exit") || !strings.Contains(r.Err.Msg, "none") {
		t.Errorf("delete of an exit in use: %v; want a conflict naming dev, api and meshctl ws set-exit WS none", r.Err)
	}
	if r := h.apply("node.delete", ByName{Name: "wm1"}); !errors.Is(r.Err, ErrConflict) {
		t.Errorf("delete of a machine hosting workspaces and an exit: %v", r.Err)
	}
	if got := h.f.Store().WorkspacesPinned("vpn"); len(got) != 2 {
		t.Errorf("pinned to vpn: %d workspaces, want 2", len(got))
	}
	h.ok("workspace.exit", WorkspaceExit{Workspace: "api", Exit: ""})
	h.ok("workspace.delete", ByName{Name: "dev"})
	h.ok("exit.delete", ByName{Name: "vpn"})
	if h.f.Store().Exit("vpn") != nil || len(h.f.Store().Exits()) != 1 {
		t.Errorf("after delete: %v", h.f.Store().Exits())
	}
	if r := h.apply("exit.delete", ByName{Name: "vpn"}); !errors.Is(r.Err, ErrNotFound) {
		t.Errorf("delete of a gone exit: %v", r.Err)
	}
	var actions []string
	for _, e := range h.f.Store().Audit(0, -1) {
		if strings.Contains(e.Action, "exit") {
			actions = append(actions, e.Action+" "+e.Object)
		}
	}
	if got := strings.Join(actions, ","); !strings.Contains(got, "exit.create exit/vpn") || !strings.Contains(got, "workspace.exit workspace/api") ||
		!strings.Contains(got, "exit.delete exit/vpn") {
		t.Errorf("audit: %s", got)
	}
}

// TestExitRefusals: malformed exits are refused with what is wrong.
func TestExitRefusals(t *testing.T) {
	h := newHarness(t)
	h.seed()
	bad := func(mod func(*Exit)) Exit { x := wgExit; x.DNS = nil; mod(&x); return x }
	for name, x := range map[string]Exit{
		"bad name":        bad(func(x *Exit) { x.Name = "Bad Name" }),
		"bad kind":        bad(func(x *Exit) { x.Kind = "socks" }),
		"no key":          bad(func(x *Exit) { x.PrivateKey = "" }),
		"no endpoint":     bad(func(x *Exit) { x.Endpoint = "" }),
		"DNS not an IP":   bad(func(x *Exit) { x.DNS = []string{"dns.example"} }),
		"too many DNS":    bad(func(x *Exit) { x.DNS = strings.Split(strings.Repeat("1.1.1.1,", 9)+"1.1.1.1", ",") }),
		"named none":      bad(func(x *Exit) { x.Name = "none" }),
		"node with keys":  {Name: "n", Kind: ExitNode, Node: "wm1", PrivateKey: "x"},
		"unknown node":    {Name: "n", Kind: ExitNode, Node: "wm9"},
		"public IP wrong": bad(func(x *Exit) { x.PublicIP = "example.com" }),
	} {
		if r := h.apply("exit.create", x); r.Err == nil {
			t.Errorf("%s: created", name)
		}
	}
	if len(h.f.Store().Exits()) != 0 {
		t.Errorf("refused exits were stored")
	}
}

// TestExitsInBackups: exits and pins survive a snapshot and a backup; a backup whose
// workspace names a missing exit, or whose node exit names a missing node, is refused.
func TestExitsInBackups(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok("exit.create", wgExit)
	h.ok("workspace.create", Workspace{ID: "w1", Name: "dev", OwnerID: "u2", Machine: "wm1", Image: "img", Exit: "vpn"})
	snap := snapshotBytes(t, h.f.Store())
	if _, err := ParseBackup(snap); err != nil {
		t.Fatalf("a good backup: %v", err)
	}
	g := newHarness(t)
	g.ok("restore", Restore{Snapshot: base64.StdEncoding.EncodeToString(snap)})
	if x := g.f.Store().Exit("vpn"); x == nil || x.PrivateKey != wgExit.PrivateKey || g.f.Store().Workspace("dev").Exit != "vpn" {
		t.Fatalf("restored: exit %+v, dev %+v", x, g.f.Store().Workspace("dev"))
	}
	for what, b := range map[string]string{
		"no exit":   strings.Replace(string(snap), `"t":"exits","o":{"name":"vpn"`, `"t":"exits","o":{"name":"vpn2"`, 1),
		"no node":   strings.Replace(string(snap), `"kind":"wireguard","endpoint":"203.0.113.9:51820","public_key":"cGVlcg==","address":"10.7.0.2/32","dns":["10.7.0.1"],"private_key":"c2VhbGVk"`, `"kind":"node","node":"wm9"`, 1),
		"bad kind":  strings.Replace(string(snap), `"kind":"wireguard"`, `"kind":"socks"`, 1),
		"no sealed": strings.Replace(string(snap), `,"private_key":"c2VhbGVk"`, ``, 1),
	} {
		if b == string(snap) {
			t.Fatalf("%s: the backup did not change", what)
		}
		if _, err := ParseBackup([]byte(b)); err == nil {
			t.Errorf("%s: backup accepted", what)
		}
	}
}
