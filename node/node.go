// Package node is a machine's place on the mesh: a tsnet node with its own identity that
// joins through coord, the daemon that keeps it up on a laptop (`meshctl daemon`, driven by
// `meshctl up` over a local socket), and what it reports of itself and its peers.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"

	"golang.org/x/net/dns/dnsmessage"
	"tailscale.com/envknob"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/logtail"
	"tailscale.com/tsnet"
)

// Node is one machine on the mesh. Set the fields, then Up; Close ends it. A zero Node
// needs at least ControlURL and Dir.
type Node struct {
	// ControlURL is coord's address (http://host:port); several, comma-separated, name
	// replicas of one cluster: the node reaches whichever answers and moves on when one dies.
	ControlURL string
	// AuthKey admits the machine the first time; later starts reuse the identity in Dir.
	AuthKey string
	// Hostname is the name it asks for; default: the machine's host name.
	Hostname string
	// Dir holds the node's identity (machine and node keys) and state.
	Dir string
	// TUN, when set, names a kernel interface (created here; needs root) that carries the
	// mesh: the machine's own stack gets the mesh addresses and routes, so every program
	// reaches peers and is reached by them. Empty: userspace networking inside the process.
	TUN string
	// ForwardToLocal, when set in userspace mode, hands incoming mesh TCP connections to
	// services listening on this machine's loopback (as a userspace-networking tailscaled does).
	ForwardToLocal bool
	// Logf receives the node's log; nil discards it.
	Logf func(format string, args ...any)

	mu    sync.Mutex // guards ts and proxy
	ts    *tsnet.Server
	proxy *controlProxy // between tsnet and several replicas
}

// noUploads keeps tsnet from sending logs to, or resolving names through, Tailscale's
// servers: a Meshwork node talks only to its own coord.
var noUploads sync.Once

// Up joins the mesh and returns once the node is running.
func (n *Node) Up(ctx context.Context) (*ipnstate.Status, error) {
	noUploads.Do(func() {
		envknob.SetNoLogsNoSupport()
		logtail.Disable()
	})
	n.mu.Lock()
	if n.ts == nil {
		logf := n.Logf
		if logf == nil {
			logf = func(string, ...any) {}
		}
		controlURL := n.ControlURL
		// Plain-HTTP coords are reached through a loopback proxy even when there is one:
		// tailscale's client, after a control connection drops soon after the last one was
		// dialled, insists on port 443 (TLS) for non-private hosts for minutes — a coord
		// serving HTTP on another port is then out of reach. To loopback it never does.
		if urls := strings.Split(n.ControlURL, ","); len(urls) > 1 || strings.HasPrefix(urls[0], "http://") {
			p, u, err := startControlProxy(n.Dir, urls)
			if err != nil {
				n.mu.Unlock()
				return nil, err
			}
			n.proxy, controlURL = p, u
		}
		n.ts = &tsnet.Server{Dir: n.Dir, ControlURL: controlURL, AuthKey: n.AuthKey, Hostname: n.Hostname,
			Logf: logf, UserLogf: logf}
		if n.TUN != "" {
			dev, err := openTUN(n.TUN)
			if err != nil {
				n.ts = nil
				n.mu.Unlock()
				return nil, err
			}
			n.ts.Tun = dev
		} else if n.ForwardToLocal {
			n.ts.RegisterFallbackTCPHandler(forwardToLocal)
		}
	}
	ts := n.ts
	n.mu.Unlock()
	st, err := ts.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("joining the mesh at %s: %w%s", n.ControlURL, err, n.health(ctx))
	}
	if n.TUN != "" {
		if err := configureTUN(n.TUN, st.TailscaleIPs); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// health is what the node's health checks say, for errors: coord's refusal reads there.
func (n *Node) health(ctx context.Context) string {
	st, err := n.Status(context.WithoutCancel(ctx))
	if err != nil || len(st.Health) == 0 {
		return ""
	}
	return fmt.Sprintf(" (%v)", st.Health)
}

// ErrDown is returned by calls that need a running node.
var ErrDown = errors.New("not on the mesh: run meshctl up")

func (n *Node) server() (*tsnet.Server, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ts == nil {
		return nil, ErrDown
	}
	return n.ts, nil
}

// Status reports the node and its peers.
func (n *Node) Status(ctx context.Context) (*ipnstate.Status, error) {
	ts, err := n.server()
	if err != nil {
		return nil, err
	}
	lc, err := ts.LocalClient()
	if err != nil {
		return nil, err
	}
	return lc.Status(ctx)
}

// Dial opens a connection over the mesh; host may be a mesh name or address.
func (n *Node) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ts, err := n.server()
	if err != nil {
		return nil, err
	}
	return ts.Dial(ctx, network, addr)
}

// Resolve finds a peer's mesh address by name (bare or full) or address.
func (n *Node) Resolve(ctx context.Context, host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, nil
	}
	st, err := n.Status(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, p := range st.Peer {
		if peerNamed(p, host) && len(p.TailscaleIPs) > 0 {
			return p.TailscaleIPs[0], nil
		}
	}
	if ip, err := n.lookup(ctx, st, host); err == nil {
		return ip, nil
	}
	return netip.Addr{}, fmt.Errorf("no peer or workspace %q on the mesh (see meshctl status, meshctl ws list)", host)
}

// lookup asks the node's own resolver (MagicDNS, which also knows workspaces) for host's
// IPv4 address; a bare name is looked up in the mesh's domain.
func (n *Node) lookup(ctx context.Context, st *ipnstate.Status, host string) (netip.Addr, error) {
	ts, err := n.server()
	if err != nil {
		return netip.Addr{}, err
	}
	lc, err := ts.LocalClient()
	if err != nil {
		return netip.Addr{}, err
	}
	name := strings.TrimSuffix(host, ".")
	if _, domain, ok := cutDot(strings.TrimSuffix(st.Self.DNSName, ".")); ok && !strings.Contains(name, ".") {
		name += "." + domain
	}
	msg, _, err := lc.QueryDNS(ctx, name+".", "A")
	if err != nil {
		return netip.Addr{}, err
	}
	var p dnsmessage.Parser
	if _, err := p.Start(msg); err != nil {
		return netip.Addr{}, err
	}
	if err := p.SkipAllQuestions(); err != nil {
		return netip.Addr{}, err
	}
	for {
		h, err := p.AnswerHeader()
		if err != nil {
			return netip.Addr{}, fmt.Errorf("no address for %s", name)
		}
		if h.Type != dnsmessage.TypeA {
			p.SkipAnswer()
			continue
		}
		a, err := p.AResource()
		if err != nil {
			return netip.Addr{}, err
		}
		return netip.AddrFrom4(a.A), nil
	}
}

// peerNamed reports whether p is called host: bare, or fully qualified with or without the
// final dot.
func peerNamed(p *ipnstate.PeerStatus, host string) bool {
	full := p.DNSName // "name.mesh.internal."
	bare, _, _ := cutDot(full)
	return host == bare || host == full || host+"." == full
}

func cutDot(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == '.' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// Close leaves the mesh (the identity in Dir stays). Idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	ts, proxy := n.ts, n.proxy
	n.ts, n.proxy = nil, nil
	n.mu.Unlock()
	var err error
	if ts != nil {
		err = ts.Close()
	}
	if proxy != nil {
		proxy.Close()
	}
	return err
}

// forwardToLocal hands an incoming mesh connection to the same port on loopback.
func forwardToLocal(src, dst netip.AddrPort) (func(net.Conn), bool) {
	return func(c net.Conn) {
		defer c.Close()
		local, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(dst.Port())))
		if err != nil {
			return
		}
		defer local.Close()
		splice(c, local)
	}, true
}

// splice copies both ways until either side is done.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}
