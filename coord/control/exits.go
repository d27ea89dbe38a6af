package control

import (
	"fmt"
	"slices"

	"meshwork.dev/coord/adminapi"
	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
)

// exitSpec is what the machine hosting a workspace pinned to exit name needs to build its
// tunnel: a WireGuard exit's private key opened for it alone (only its Noise channel
// carries it), a node exit's mesh addresses.
func (s *Server) exitSpec(store *fsm.Store, name string) (*api.ExitSpec, error) {
	x := store.Exit(name)
	if x == nil {
		return nil, fmt.Errorf("exit %q is gone", name) // workspace.exit refuses unknown exits: not reached
	}
	spec := &api.ExitSpec{Name: x.Name, Kind: x.Kind, Endpoint: x.Endpoint, PeerPublicKey: x.PublicKey,
		Address: x.Address, DNS: slices.Clone(x.DNS), PublicIP: x.PublicIP}
	if x.Kind == fsm.ExitNode {
		if n := store.Node(x.Node); n != nil {
			spec.NodeIPv4, spec.NodeIPv6 = n.IPv4, n.IPv6
		}
		return spec, nil
	}
	if s.Secrets == nil {
		return nil, fmt.Errorf("exit %q: coord has no secret key to open its private key: start every replica with the same --secret-key-file FILE", x.Name)
	}
	k, err := adminapi.OpenExitKey(s.Secrets, x)
	if err != nil {
		return nil, fmt.Errorf("exit %q: its private key does not open with this replica's secret key (%v): start every replica with the same --secret-key-file", x.Name, err)
	}
	spec.PrivateKey = k
	return spec, nil
}
