package node

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"

	"tailscale.com/ipn/ipnstate"
)

// Summary is what `meshctl status` shows: this machine and its peers.
type Summary struct {
	State string `json:"state"` // Running, NeedsLogin, Stopped, ...
	Self  Peer   `json:"self"`
	Peers []Peer `json:"peers"`
	// SOCKS5 is the address of the daemon's SOCKS5 proxy into the mesh (userspace mode).
	SOCKS5 string `json:"socks5,omitempty"`
	// DNS says which resolver file asks MagicDNS, when the daemon pointed it there (TUN mode).
	DNS string `json:"dns,omitempty"`
}

// Peer is one machine as this one sees it.
type Peer struct {
	Name          string    `json:"name"` // bare name
	DNSName       string    `json:"dns_name"`
	IPs           []string  `json:"ips"`
	OS            string    `json:"os,omitempty"`
	Online        bool      `json:"online"`
	Path          string    `json:"path"`            // "direct", "relayed" or "idle"
	Addr          string    `json:"addr,omitempty"`  // the direct address in use
	Relay         string    `json:"relay,omitempty"` // the DERP region relaying
	LastHandshake time.Time `json:"last_handshake,omitzero"`
}

// Summarize turns tsnet's status into a Summary.
func Summarize(st *ipnstate.Status) Summary {
	s := Summary{State: st.BackendState}
	if st.Self != nil {
		s.Self = peer(st.Self)
	}
	for _, p := range st.Peer {
		s.Peers = append(s.Peers, peer(p))
	}
	slices.SortFunc(s.Peers, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	return s
}

// ownAddrs are p's own mesh addresses, IPv4 first. tailscale lists in TailscaleIPs only those
// in its own ranges; an IPv6 from a cluster's older random /48 is found among the AllowedIPs
// that are not routes p serves for others (its workspaces').
func ownAddrs(p *ipnstate.PeerStatus) []netip.Addr {
	out := slices.Clone(p.TailscaleIPs)
	if p.AllowedIPs == nil {
		return out
	}
	var routes []netip.Prefix
	if p.PrimaryRoutes != nil {
		routes = p.PrimaryRoutes.AsSlice()
	}
	for _, pfx := range p.AllowedIPs.All() {
		if pfx.IsSingleIP() && !slices.Contains(out, pfx.Addr()) && !slices.Contains(routes, pfx) {
			out = append(out, pfx.Addr())
		}
	}
	slices.SortStableFunc(out, func(a, b netip.Addr) int { return cmp.Compare(a.BitLen(), b.BitLen()) })
	return out
}

func peer(p *ipnstate.PeerStatus) Peer {
	bare, _, _ := cutDot(p.DNSName)
	out := Peer{Name: bare, DNSName: strings.TrimSuffix(p.DNSName, "."), OS: p.OS, Online: p.Online,
		Addr: p.CurAddr, Relay: p.Relay, LastHandshake: p.LastHandshake}
	for _, ip := range ownAddrs(p) {
		out.IPs = append(out.IPs, ip.String())
	}
	switch {
	case p.CurAddr != "":
		out.Path = "direct"
	case p.Relay != "" && !p.LastHandshake.IsZero():
		out.Path = "relayed"
	default:
		out.Path = "idle"
	}
	return out
}
