// Package relay is the DERP relay every coord replica embeds: nodes that cannot reach each
// other directly exchange (still end-to-end encrypted) WireGuard packets through it, and every
// node keeps a home connection to one. The replicas' relays form one region and are meshed,
// so two nodes homed on different replicas still meet.
package relay

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/derp/derpserver"
	"tailscale.com/net/netmon"
	"tailscale.com/net/stun"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// RegionID is the DERP region of a Meshwork cluster's relays.
const RegionID = 900

// Config says how to run a relay.
type Config struct {
	Addr     string          // host:port (TCP) nodes and other relays dial; the host is an IP
	Name     string          // the replica's ID
	STUNPort int             // where the replica answers STUN (see STUNReply); 0: none
	Cert     tls.Certificate // for Addr's IP, from the cluster CA
	CAs      *x509.CertPool  // the cluster CA: other relays' certificates are checked against it
	MeshKey  key.DERPMesh    // the same on every replica: relays admit each other with it
	// Admit reports whether a node key may use the relay: a machine on the mesh. nil admits
	// everyone (tests of the relay alone).
	Admit func(ctx context.Context, k key.NodePublic) bool
	Logf  func(string, ...any)
}

// Relay is a running DERP server. Make it with Listen.
type Relay struct {
	cfg   Config
	srv   *derpserver.Server
	http  *http.Server
	admit *http.Server // answers the DERP server's admission questions (Config.Admit)
	done  chan struct{}

	ctx    context.Context // good until Close
	cancel context.CancelFunc
	wg     sync.WaitGroup                // mesh clients
	mu     sync.Mutex                    // guards meshed
	meshed map[string]context.CancelFunc // relay address → its mesh client
}

// Listen serves DERP over TLS on cfg.Addr. Nodes do not know the cluster CA, so the DERP
// map tells them to skip verification, which costs metadata privacy only — WireGuard
// encrypts what DERP carries; relays verify each other.
func Listen(cfg Config) (*Relay, error) {
	if _, err := Node(cfg.Name, cfg.Addr, cfg.STUNPort); err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", cfg.Addr, &tls.Config{Certificates: []tls.Certificate{cfg.Cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	r := &Relay{cfg: cfg, done: make(chan struct{}), meshed: map[string]context.CancelFunc{}}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	// The DERP server's own log is per-connection chatter; it stays quiet.
	r.srv = derpserver.New(key.NewNode(), func(string, ...any) {})
	r.srv.SetMeshKey(cfg.MeshKey.String())
	if cfg.Admit != nil {
		url, err := r.serveAdmission()
		if err != nil {
			ln.Close()
			return nil, err
		}
		r.srv.SetVerifyClientURL(url)
	}
	mux := http.NewServeMux()
	mux.Handle("/derp", derpserver.Handler(r.srv))
	mux.HandleFunc("/derp/probe", derpserver.ProbeHandler)
	mux.HandleFunc("/derp/latency-check", derpserver.ProbeHandler)
	mux.HandleFunc("/generate_204", derpserver.ServeNoContent)
	r.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(r.done)
		if err := r.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logf("relay: %v", err)
		}
	}()
	return r, nil
}

// Node describes the relay of replica name at addr for the DERP map.
func Node(name, addr string, stunPort int) (*tailcfg.DERPNode, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("relay address %q: %w", addr, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil, fmt.Errorf("relay address %q: the host must be an IP address nodes can reach", addr)
	}
	port, _ := strconv.Atoi(portStr)
	n := &tailcfg.DERPNode{Name: name, RegionID: RegionID, HostName: host, DERPPort: port,
		STUNPort: cmp.Or(stunPort, -1), InsecureForTests: true}
	// The other family is "none": without it clients look the host up in DNS and wait out
	// probes that cannot answer.
	n.IPv4, n.IPv6 = host, "none"
	if ip.Is6() {
		n.IPv4, n.IPv6 = "none", host
	}
	return n, nil
}

// Map is the DERP map of one region made of the replicas' relays.
func Map(nodes ...*tailcfg.DERPNode) *tailcfg.DERPMap {
	return &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{
		RegionID: {RegionID: RegionID, RegionCode: "meshwork", RegionName: "Meshwork coord", Nodes: nodes},
	}}
}

// MeshWith keeps a mesh connection to each relay in addrs (other replicas') and drops
// those no longer listed: a packet for a node homed on another relay is forwarded there.
func (r *Relay) MeshWith(addrs []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return
	}
	for addr, stop := range r.meshed {
		if !slices.Contains(addrs, addr) {
			stop()
			delete(r.meshed, addr)
		}
	}
	for _, addr := range addrs {
		if addr == r.cfg.Addr || r.meshed[addr] != nil {
			continue
		}
		c, err := derphttp.NewClient(r.srv.PrivateKey(), "https://"+addr+"/derp", r.logf, netmon.NewStatic())
		if err != nil {
			r.logf("relay: mesh with %s: %v", addr, err)
			continue
		}
		c.MeshKey = r.cfg.MeshKey
		c.WatchConnectionChanges = true
		c.TLSConfig = &tls.Config{RootCAs: r.cfg.CAs, MinVersion: tls.VersionTLS12}
		ctx, cancel := context.WithCancel(r.ctx)
		r.meshed[addr] = cancel
		add := func(m derp.PeerPresentMessage) { r.srv.AddPacketForwarder(m.Key, c) }
		remove := func(m derp.PeerGoneMessage) { r.srv.RemovePacketForwarder(m.Peer, c) }
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer c.Close()
			c.RunWatchConnectionLoop(ctx, r.srv.PublicKey(), r.logf, add, remove, func(error) {})
		}()
	}
}

func (r *Relay) logf(format string, args ...any) {
	if r.cfg.Logf != nil {
		r.cfg.Logf(format, args...)
	}
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

// Close stops the relay and its mesh connections, and waits for them.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.cancel()
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r.http.Shutdown(ctx)
	r.http.Close()
	if r.admit != nil {
		r.admit.Close()
	}
	err := r.srv.Close()
	<-r.done
	r.wg.Wait()
	return err
}
