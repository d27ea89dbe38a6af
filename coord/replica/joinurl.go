package replica

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
)

// CheckJoinURL refuses to join through a plain-HTTP URL to another machine: the member's
// answer carries the cluster's CA key, which must not cross a network in clear text.
// insecure allows it (labs only).
func CheckJoinURL(join string, insecure bool) error {
	u, err := url.Parse(join)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("--join %q: want a member's admin API URL, https://HOST:PORT", join)
	}
	if u.Scheme == "https" || insecure || IsLoopback(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("--join %s would receive the cluster's CA key in clear text: join with https:// "+
		"(serve the member's admin API over TLS with --tls-cert/--tls-key; SSL_CERT_FILE names a CA to trust), "+
		"or pass --insecure-join on a lab", join)
}

// IsLoopback reports whether host (a name or address, as in a URL or RemoteAddr) is this
// machine's loopback.
func IsLoopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
