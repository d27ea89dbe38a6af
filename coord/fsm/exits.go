package fsm

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Exit is a way out to the internet that workspaces' egress is pinned to: a mesh node
// (Kind "node") or an external WireGuard peer (Kind "wireguard").
type Exit struct {
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Node      string   `json:"node,omitempty"`       // the exit node (node exits)
	Endpoint  string   `json:"endpoint,omitempty"`   // the peer's host:port (wireguard exits)
	PublicKey string   `json:"public_key,omitempty"` // the peer's, base64
	Address   string   `json:"address,omitempty"`    // ours in the tunnel, comma-separated prefixes
	DNS       []string `json:"dns,omitempty"`
	PublicIP  string   `json:"public_ip,omitempty"` // what verification expects the internet to see
	// PrivateKey is ours in the tunnel, sealed (base64) as the admin API stores it: see
	// secret.ExitKeyAAD.
	PrivateKey string    `json:"private_key,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// Kinds of exit.
const (
	ExitNode      = "node"
	ExitWireGuard = "wireguard"
)

// Caps on an exit's fields.
const (
	MaxExitDNS      = 8   // resolvers of one exit
	maxExitField    = 300 // bytes of its endpoint, a key or its address list
	maxSealedKeyLen = 256 // bytes of its sealed private key (base64)
)

// check checks an exit as exit.create and a backup's check do.
func (x *Exit) check() error {
	if err := ValidName("exit", x.Name); err != nil {
		return err
	}
	if x.Name == "none" {
		return errorf(CodeInvalid, `exit name "none" is taken by meshctl ws set-exit WS none (unpin): pick another`)
	}
	if err := firstErr(checkLen("the endpoint", x.Endpoint, maxExitField), checkLen("a key", x.PublicKey, maxExitField),
		checkLen("the address", x.Address, maxExitField), checkLen("the sealed key", x.PrivateKey, maxSealedKeyLen)); err != nil {
		return err
	}
	if len(x.DNS) > MaxExitDNS {
		return capErr("DNS servers of an exit", len(x.DNS), MaxExitDNS)
	}
	for _, d := range x.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return errorf(CodeInvalid, "exit %q: DNS server %q is not an IP address", x.Name, d)
		}
	}
	if x.PublicIP != "" {
		if _, err := netip.ParseAddr(x.PublicIP); err != nil {
			return errorf(CodeInvalid, "exit %q: public IP %q is not an IP address", x.Name, x.PublicIP)
		}
	}
	switch x.Kind {
	case ExitNode:
		if x.Node == "" || x.Endpoint != "" || x.PrivateKey != "" {
			return errorf(CodeInvalid, "exit %q: a node exit names its node and nothing of WireGuard", x.Name)
		}
	case ExitWireGuard:
		if x.Node != "" || x.Endpoint == "" || x.PublicKey == "" || x.Address == "" || x.PrivateKey == "" {
			return errorf(CodeInvalid, "exit %q: a WireGuard exit needs an endpoint, the peer's public key, our address and our sealed private key", x.Name)
		}
	default:
		return errorf(CodeInvalid, "exit %q: kind %q: use node or wireguard", x.Name, x.Kind)
	}
	return nil
}

func exitCreate(t *tx) (any, string, error) {
	var x Exit
	if err := t.decode(&x); err != nil {
		return nil, "", err
	}
	if err := x.check(); err != nil {
		return nil, "", err
	}
	if get[Exit](t, tExits, "id", x.Name) != nil {
		return nil, "", errorf(CodeConflict, "exit %q already exists: remove it first (meshctl exit remove %s) or pick another name", x.Name, x.Name)
	}
	if x.Kind == ExitNode && get[Node](t, tNodes, "name", x.Node) == nil {
		return nil, "", errorf(CodeNotFound, "no node %q (see meshctl node list)", x.Node)
	}
	x.CreatedAt = t.c.Time
	t.add(tExits, &x)
	return &x, "exit/" + x.Name, nil
}

func exitDelete(t *tx) (any, string, error) {
	var req ByName
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	x := get[Exit](t, tExits, "id", req.Name)
	if x == nil {
		return nil, "", errorf(CodeNotFound, "no exit %q (see meshctl exit list)", req.Name)
	}
	if ws := all[Workspace](t.Txn, tWorkspaces, "exit", x.Name); len(ws) > 0 {
		names := make([]string, len(ws))
		for i, w := range ws {
			names[i] = w.Name
		}
		return nil, "", errorf(CodeConflict, "exit %q is used by workspace(s) %s: pin them elsewhere first (meshctl ws set-exit %s none)",
			x.Name, strings.Join(names, ", "), names[0])
	}
	t.del(tExits, x)
	return nil, "exit/" + x.Name, nil
}

// WorkspaceExit is the payload of workspace.exit: Exit "" unpins the workspace.
type WorkspaceExit struct {
	Workspace string `json:"workspace"`
	Exit      string `json:"exit"`
}

func workspaceExit(t *tx) (any, string, error) {
	var req WorkspaceExit
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	old := get[Workspace](t, tWorkspaces, "name", req.Workspace)
	if old == nil {
		return nil, "", errorf(CodeNotFound, "no workspace %q", req.Workspace)
	}
	if err := exitExists(t, req.Exit); err != nil {
		return nil, "", err
	}
	w := *old
	if w.Exit != req.Exit {
		w.Exit, w.EgressState, w.EgressReason = req.Exit, "", ""
	}
	w.UpdatedAt = t.c.Time
	t.put(tWorkspaces, &w)
	return &w, "workspace/" + w.Name, nil
}

// exitExists checks that exit name ("": none) exists.
func exitExists(t *tx, name string) error {
	if name != "" && get[Exit](t, tExits, "id", name) == nil {
		return errorf(CodeNotFound, "no exit %q (see meshctl exit list)", name)
	}
	return nil
}

// Exits lists every exit by name.
func (s *Store) Exits() []*Exit { return all[Exit](s.read(), tExits, "id") }

// Exit finds an exit by name.
func (s *Store) Exit(name string) *Exit { return first[Exit](s.read(), tExits, "id", name) }

// WorkspacesPinned lists the workspaces whose egress is pinned to exit name.
func (s *Store) WorkspacesPinned(name string) []*Workspace {
	return all[Workspace](s.read(), tWorkspaces, "exit", name)
}

// exit checks an exit of a backup as exit.create would.
func (c *backupCheck) exit(x *Exit) error {
	if err := x.check(); err != nil {
		return err
	}
	if x.Kind == ExitNode && !c.nodes[x.Node] {
		return fmt.Errorf("exit %q: no node %q", x.Name, x.Node)
	}
	return nil
}
