// Package ipam is mesh addressing: IPv4 addresses from 100.64.0.0/10 and IPv6 addresses from
// the mesh's ULA /48, paired so that a host's IPv6 address ends in its IPv4 address.
package ipam

import "net/netip"

// CGNAT is the range mesh IPv4 addresses come from.
var CGNAT = netip.MustParsePrefix("100.64.0.0/10")

// reserved ranges inside CGNAT that are never handed out: Tailscale clients use
// 100.100.100.100 (and its /24) for their resolver, ChromeOS 100.115.92.0/23.
var reserved = []netip.Prefix{
	netip.MustParsePrefix("100.100.100.0/24"),
	netip.MustParsePrefix("100.115.92.0/23"),
}

// First is the first address handed out.
var First = netip.MustParseAddr("100.64.0.1")

// Usable reports whether a may be given to a host: inside CGNAT, not its first or last
// address, not reserved.
func Usable(a netip.Addr) bool {
	if !CGNAT.Contains(a) || a == CGNAT.Addr() || a == last {
		return false
	}
	for _, r := range reserved {
		if r.Contains(a) {
			return false
		}
	}
	return true
}

var last = netip.MustParseAddr("100.127.255.255")

// Next returns the usable address after a, wrapping around the range.
func Next(a netip.Addr) netip.Addr {
	for {
		a = a.Next()
		if !CGNAT.Contains(a) {
			a = First
		}
		if Usable(a) {
			return a
		}
	}
}

// Size is how many addresses the range holds (an upper bound for a search).
const Size = 1 << 22

// ULA is the /48 new clusters take their IPv6 addresses from: Tailscale's own ULA range, as
// 100.64.0.0/10 is its IPv4 range. Tailscale clients (stock and tsnet) route a single address
// in these two ranges to the peer whose AllowedIPs list it, so a workspace's IPv6 is reached
// as its IPv4 is; a /128 anywhere else is a subnet route they ignore unless told
// --accept-routes. Clusters made before keep the random /48 they stored.
var ULA = netip.MustParsePrefix("fd7a:115c:a1e0::/48")

// IPv6 is the address in ula paired with v4: the prefix, zeros, then v4's 32 bits.
func IPv6(ula netip.Prefix, v4 netip.Addr) netip.Addr {
	b := ula.Masked().Addr().As16()
	v := v4.As4()
	copy(b[12:], v[:])
	return netip.AddrFrom16(b)
}
