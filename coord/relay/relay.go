// Package relay is the DERP relay every coord replica embeds: nodes that cannot reach each
// other directly exchange (still end-to-end encrypted) WireGuard packets through it, and every
// node keeps a home connection to one.
package relay

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"tailscale.com/derp/derpserver"
	"tailscale.com/net/stun"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// RegionID is the DERP region of a Meshwork cluster's relays.
const RegionID = 900

// Relay is a running DERP server. Make it with Listen.
type Relay struct {
	Node *tailcfg.DERPNode // how nodes reach it, for the DERP map
	srv  *derpserver.Server
	http *http.Server
	done chan struct{}
}

// Listen serves DERP over TLS on addr (host:port; the host is what nodes dial); stunPort,
// when not 0, is where the replica answers STUN (see STUNReply). The certificate is
// self-signed: the DERP map tells clients to skip verification, which costs metadata
// privacy only — WireGuard encrypts what DERP carries.
func Listen(addr, name string, stunPort int, logf func(string, ...any)) (*Relay, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("relay address %q: %w", addr, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil, fmt.Errorf("relay address %q: the host must be an IP address nodes can reach", addr)
	}
	cert, err := selfSigned(ip)
	if err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	if portStr == "0" {
		_, portStr, _ = net.SplitHostPort(ln.Addr().String())
	}
	port, _ := strconv.Atoi(portStr)
	// The DERP server's own log is per-connection chatter; it stays quiet.
	r := &Relay{srv: derpserver.New(key.NewNode(), func(string, ...any) {}), done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle("/derp", derpserver.Handler(r.srv))
	mux.HandleFunc("/derp/probe", derpserver.ProbeHandler)
	mux.HandleFunc("/derp/latency-check", derpserver.ProbeHandler)
	mux.HandleFunc("/generate_204", derpserver.ServeNoContent)
	r.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	r.Node = &tailcfg.DERPNode{Name: name, RegionID: RegionID, HostName: host, DERPPort: port, STUNPort: cmp.Or(stunPort, -1), InsecureForTests: true}
	// The other family is "none": without it clients look the host up in DNS and wait out
	// probes that cannot answer.
	r.Node.IPv4, r.Node.IPv6 = host, "none"
	if ip.Is6() {
		r.Node.IPv4, r.Node.IPv6 = "none", host
	}
	go func() {
		defer close(r.done)
		if err := r.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logf("relay: %v", err)
		}
	}()
	return r, nil
}

// STUNReply answers a STUN binding request with the address it came from (nodes learn their
// public address and NAT behaviour from it); anything else gets no answer.
func STUNReply(pkt []byte, from net.Addr) []byte {
	if !stun.Is(pkt) {
		return nil
	}
	tx, err := stun.ParseBindingRequest(pkt)
	if err != nil {
		return nil
	}
	ua, ok := from.(*net.UDPAddr)
	if !ok {
		return nil
	}
	ap := ua.AddrPort()
	return stun.Response(tx, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
}

// Map is the DERP map for one region made of nodes.
func Map(nodes ...*tailcfg.DERPNode) *tailcfg.DERPMap {
	return &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{
		RegionID: {RegionID: RegionID, RegionCode: "meshwork", RegionName: "Meshwork coord", Nodes: nodes},
	}}
}

// Close stops the relay and waits for it.
func (r *Relay) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r.http.Shutdown(ctx)
	r.http.Close()
	err := r.srv.Close()
	<-r.done
	return err
}

func selfSigned(ip netip.Addr) (tls.Certificate, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "meshwork relay " + ip.String()},
		IPAddresses:  []net.IP{ip.AsSlice()},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, nil
}
