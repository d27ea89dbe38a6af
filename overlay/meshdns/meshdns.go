// Package meshdns is the mesh's naming, defined once for coord, nodes and meshctl: the default
// domain, the address of the resolver every node answers (MagicDNS), and how mesh names are
// read.
package meshdns

import (
	"net/netip"
	"strings"
)

// DefaultDomain is the mesh's DNS domain unless coord is started with another (--domain).
const DefaultDomain = "mesh.internal"

// Resolver is the address every node answers DNS on, inside the mesh: Tailscale's MagicDNS.
var Resolver = netip.MustParseAddr("100.100.100.100")

// Label is the first label of a mesh name ("api" of "api.mesh.internal." or of "api"), the
// name a node or workspace has in coord.
func Label(name string) string {
	label, _, _ := strings.Cut(strings.TrimSuffix(name, "."), ".")
	return label
}

// DomainOf is the domain of a fully qualified mesh name ("mesh.internal" of
// "laptop.mesh.internal."), or "" for a bare name.
func DomainOf(fqdn string) string {
	_, domain, _ := strings.Cut(strings.TrimSuffix(fqdn, "."), ".")
	return domain
}
