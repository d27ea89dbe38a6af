package adminapi

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// maxWGQuick bounds a wg-quick file.
const maxWGQuick = 16 << 10

// wgQuick is what an exit takes from a wg-quick file.
type wgQuick struct {
	privateKey string   // ours, base64
	address    string   // ours in the tunnel: prefixes, comma-separated
	dns        []string // resolvers
	publicKey  string   // the peer's, base64
	endpoint   string   // the peer's host:port
}

// wgLine is one key = value line of a wg-quick file, with its number for errors.
type wgLine struct {
	n          int
	key, value string
}

// wgParser reads a wg-quick file section by section.
type wgParser struct {
	out     wgQuick
	section string
	peers   int
	allowed bool // an AllowedIPs line was seen
	seen    map[string]int
}

// Keys wg-quick takes that say nothing an exit needs: they are read and not used.
var wgIgnored = map[string]bool{"ListenPort": true, "MTU": true, "Table": true, "SaveConfig": true,
	"FwMark": true, "PersistentKeepalive": true}

// parseWGQuick reads a wg-quick file: [Interface] PrivateKey, Address and DNS; one [Peer]
// with PublicKey, Endpoint and AllowedIPs that route everything (0.0.0.0/0 and/or ::/0).
// Errors name the line and the fix.
func parseWGQuick(text string) (*wgQuick, error) {
	if len(text) > maxWGQuick {
		return nil, fmt.Errorf("wireguard file: over %d bytes; is it a wg-quick file?", maxWGQuick)
	}
	p := &wgParser{seen: map[string]int{}}
	for i, raw := range strings.Split(text, "\n") {
		if err := p.line(i+1, raw); err != nil {
			return nil, fmt.Errorf("wireguard file line %d: %w", i+1, err)
		}
	}
	return p.finish()
}

func (p *wgParser) line(n int, raw string) error {
	s, _, _ := strings.Cut(raw, "#")
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return nil
	case strings.HasPrefix(s, "["):
		return p.header(s)
	}
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("%q: want Key = Value or a [Section]", s)
	}
	return p.pair(wgLine{n, canonicalWGKey(strings.TrimSpace(k)), strings.TrimSpace(v)})
}

// canonicalWGKey spells a key as wg-quick's documentation does (keys are case-insensitive).
func canonicalWGKey(k string) string {
	for _, c := range []string{"PrivateKey", "Address", "DNS", "PublicKey", "Endpoint", "AllowedIPs", "PresharedKey",
		"PreUp", "PostUp", "PreDown", "PostDown", "ListenPort", "MTU", "Table", "SaveConfig", "FwMark", "PersistentKeepalive"} {
		if strings.EqualFold(k, c) {
			return c
		}
	}
	return k
}

func (p *wgParser) header(s string) error {
	switch strings.ToLower(s) {
	case "[interface]":
		if p.section != "" {
			return fmt.Errorf("[Interface] must come first, and once")
		}
		p.section = "Interface"
	case "[peer]":
		if p.section == "" {
			return fmt.Errorf("[Peer] before [Interface]: the file starts with [Interface]")
		}
		if p.peers++; p.peers > 1 {
			return fmt.Errorf("a second [Peer]: an exit is one peer; keep the one to route everything through")
		}
		p.section = "Peer"
	default:
		return fmt.Errorf("unknown section %s: use [Interface] and [Peer]", s)
	}
	return nil
}

func (p *wgParser) pair(l wgLine) error {
	if p.section == "" {
		return fmt.Errorf("%s outside a section: start the file with [Interface]", l.key)
	}
	id := p.section + "." + l.key
	if prev, ok := p.seen[id]; ok && l.key != "Address" && l.key != "DNS" && l.key != "AllowedIPs" {
		return fmt.Errorf("%s again (first on line %d): keep one", l.key, prev)
	}
	p.seen[id] = l.n
	switch id {
	case "Interface.PrivateKey":
		return setKey(&p.out.privateKey, l.value, "PrivateKey")
	case "Interface.Address":
		return p.address(l.value)
	case "Interface.DNS":
		return p.dns(l.value)
	case "Peer.PublicKey":
		return setKey(&p.out.publicKey, l.value, "PublicKey")
	case "Peer.Endpoint":
		return p.endpoint(l.value)
	case "Peer.AllowedIPs":
		return p.allowedIPs(l.value)
	}
	switch {
	case strings.HasPrefix(l.key, "Pre") || strings.HasPrefix(l.key, "Post"):
		return fmt.Errorf("%s: Meshwork runs no commands from an exit's file; remove the line", l.key)
	case l.key == "PresharedKey":
		return fmt.Errorf("PresharedKey is not supported yet; use a peer without one")
	case wgIgnored[l.key]:
		return nil
	}
	return fmt.Errorf("unknown key %s in [%s]", l.key, p.section)
}

// setKey checks a WireGuard key (32 bytes, base64) and keeps it.
func setKey(dst *string, v, what string) error {
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(b) != 32 {
		return fmt.Errorf("%s is not a WireGuard key (44 characters of base64, as wg genkey prints)", what)
	}
	*dst = v
	return nil
}

func (p *wgParser) address(v string) error {
	for _, a := range splitList(v) {
		pfx, err := netip.ParsePrefix(a)
		if err != nil {
			addr, aerr := netip.ParseAddr(a)
			if aerr != nil {
				return fmt.Errorf("%q in Address is not an IP address or prefix (10.2.0.2/32)", a)
			}
			pfx = netip.PrefixFrom(addr, addr.BitLen())
		}
		p.out.address = joinList(p.out.address, pfx.String())
	}
	return nil
}

func (p *wgParser) dns(v string) error {
	for _, d := range splitList(v) {
		a, err := netip.ParseAddr(d)
		if err != nil {
			return fmt.Errorf("DNS %q is not an IP address (search domains are not supported: keep the resolvers)", d)
		}
		p.out.dns = append(p.out.dns, a.String())
	}
	return nil
}

func (p *wgParser) endpoint(v string) error {
	host, port, err := net.SplitHostPort(v)
	n, perr := strconv.Atoi(port)
	if err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q in Endpoint: want host:port (203.0.113.9:51820, [2001:db8::1]:51820 or vpn.example.com:51820)", v)
	}
	p.out.endpoint = v
	return nil
}

func (p *wgParser) allowedIPs(v string) error {
	p.allowed = true
	for _, a := range splitList(v) {
		pfx, err := netip.ParsePrefix(a)
		if err != nil || pfx.Bits() != 0 {
			return fmt.Errorf("AllowedIPs %q: an exit carries all of a workspace's internet traffic: write AllowedIPs = 0.0.0.0/0, ::/0", a)
		}
	}
	return nil
}

func (p *wgParser) finish() (*wgQuick, error) {
	missing := func(what string) error { return fmt.Errorf("wireguard file: no %s", what) }
	switch {
	case p.out.privateKey == "":
		return nil, missing("PrivateKey in [Interface]: our key in the tunnel")
	case p.out.address == "":
		return nil, missing("Address in [Interface]: our address in the tunnel")
	case p.peers == 0:
		return nil, missing("[Peer]: the exit's side of the tunnel")
	case p.out.publicKey == "":
		return nil, missing("PublicKey in [Peer]: the exit's key")
	case p.out.endpoint == "":
		return nil, missing("Endpoint in [Peer]: where the exit listens (host:port)")
	case !p.allowed:
		return nil, missing("AllowedIPs in [Peer]: write AllowedIPs = 0.0.0.0/0, ::/0")
	}
	return &p.out, nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func joinList(list, item string) string {
	if list == "" {
		return item
	}
	return list + "," + item
}
