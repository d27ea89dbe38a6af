package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SOCKS5 is a SOCKS5 proxy (RFC 1928: CONNECT without authentication) whose connections go
// out through Dial — in userspace mode, the way programs on the laptop reach the mesh
// (`curl --socks5-hostname 127.0.0.1:1055 http://peer:8080`). Serve it on a listener;
// Close stops it and every connection it carries.
//
// It is not tailscale.com/net/socks5, though that was weighed: that server answers every
// failed dial "general failure" (curl then cannot say "refused" or "no such host"), serves
// UDP ASSOCIATE, answers an unknown address type "general failure", has no Close for the
// connections it carries, and fixes the dial timeout at 5 s. socks_test.go pins those.
type SOCKS5 struct {
	// Dial opens the outgoing connection; addr is host:port, host an IP address or a name
	// Resolve did not place. Required.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Resolve places a name the client sent (mesh names: bare or full). An error wrapping
	// ErrNoSuchHost refuses the request (host unreachable); nil, or another error, leaves
	// the name to Dial.
	Resolve func(ctx context.Context, host string) (netip.Addr, error)
	// Logf receives one line per refused or failed request; nil discards them.
	Logf func(format string, args ...any)

	mu     sync.Mutex // guards the fields below
	lns    []net.Listener
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup // Serve loops and connections
}

// SOCKS5 reply codes (RFC 1928 §6).
const (
	socksSucceeded           = 0x00
	socksGeneralFailure      = 0x01
	socksNetworkUnreachable  = 0x03
	socksHostUnreachable     = 0x04
	socksConnectionRefused   = 0x05
	socksCommandNotSupported = 0x07
	socksAddrNotSupported    = 0x08
)

// SOCKS5 address types.
const (
	socksIPv4   = 0x01
	socksDomain = 0x03
	socksIPv6   = 0x04
)

// socksHandshakeTimeout bounds a client's greeting and request, and the dial.
const socksHandshakeTimeout = 30 * time.Second

// ErrNoSuchHost, from Resolve, says a name is known not to exist (a mesh name no peer has):
// the proxy answers at once rather than let Dial ask other resolvers.
var ErrNoSuchHost = errors.New("no such host")

// ErrProxyClosed is returned by Serve after Close.
var ErrProxyClosed = errors.New("socks5: proxy closed")

// Serve accepts connections on ln until ln fails or Close is called; it closes ln.
func (s *SOCKS5) Serve(ln net.Listener) error {
	if !s.track(ln, nil) {
		ln.Close()
		return ErrProxyClosed
	}
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrProxyClosed
			}
			return err
		}
		if !s.track(nil, c) {
			c.Close()
			return ErrProxyClosed
		}
		go func() {
			defer s.untrack(c)
			s.serveConn(c)
		}()
	}
}

// track records a listener or a connection (and counts it in wg) unless s is closed.
func (s *SOCKS5) track(ln net.Listener, c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if ln != nil {
		s.lns = append(s.lns, ln)
	}
	if c != nil {
		if s.conns == nil {
			s.conns = map[net.Conn]bool{}
		}
		s.conns[c] = true
		s.wg.Add(1)
	}
	return true
}

func (s *SOCKS5) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *SOCKS5) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops the listeners and every connection, and waits for them. Idempotent.
func (s *SOCKS5) Close() error {
	s.mu.Lock()
	s.closed = true
	for _, ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.lns = nil
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *SOCKS5) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

// serveConn runs one client: greeting, request, then the stream both ways.
func (s *SOCKS5) serveConn(c net.Conn) {
	c.SetDeadline(time.Now().Add(socksHandshakeTimeout))
	if err := socksGreet(c); err != nil {
		s.logf("socks5: %v: %v", c.RemoteAddr(), err)
		return
	}
	host, port, code, err := socksRequest(c)
	if err != nil {
		s.logf("socks5: %v: %v", c.RemoteAddr(), err)
		if code != socksSucceeded {
			socksReply(c, code, nil)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), socksHandshakeTimeout)
	defer cancel()
	remote, err := s.dial(ctx, host, port)
	if err != nil {
		s.logf("socks5: %v: connect %s: %v", c.RemoteAddr(), net.JoinHostPort(host, port), err)
		socksReply(c, dialErrorCode(err), nil)
		return
	}
	defer remote.Close()
	if err := socksReply(c, socksSucceeded, remote.LocalAddr()); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	splice(c, remote)
}

func (s *SOCKS5) dial(ctx context.Context, host, port string) (net.Conn, error) {
	if _, err := netip.ParseAddr(host); err != nil && s.Resolve != nil {
		ip, err := s.Resolve(ctx, host)
		switch {
		case err == nil:
			host = ip.String()
		case errors.Is(err, ErrNoSuchHost):
			return nil, err
		}
	}
	if s.Dial == nil {
		return nil, errors.New("socks5: no Dial")
	}
	return s.Dial(ctx, "tcp", net.JoinHostPort(host, port))
}

// socksGreet reads the client's methods and picks "no authentication".
func socksGreet(c net.Conn) error {
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	if hdr[0] != 5 {
		return fmt.Errorf("SOCKS version %d, want 5", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return err
	}
	for _, m := range methods {
		if m == 0x00 {
			_, err := c.Write([]byte{5, 0x00})
			return err
		}
	}
	c.Write([]byte{5, 0xff})
	return errors.New("client offers no method without authentication")
}

// socksRequest reads a request and returns where it wants to go; on error, code is the
// reply to send (socksSucceeded: none, the connection is broken).
func socksRequest(c net.Conn) (host, port string, code byte, err error) {
	var hdr [4]byte // VER CMD RSV ATYP
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return "", "", socksSucceeded, err
	}
	if hdr[0] != 5 {
		return "", "", socksSucceeded, fmt.Errorf("request version %d, want 5", hdr[0])
	}
	switch hdr[3] {
	case socksIPv4, socksIPv6:
		b := make([]byte, map[byte]int{socksIPv4: 4, socksIPv6: 16}[hdr[3]])
		if _, err := io.ReadFull(c, b); err != nil {
			return "", "", socksSucceeded, err
		}
		ip, _ := netip.AddrFromSlice(b)
		host = ip.String()
	case socksDomain:
		var n [1]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return "", "", socksSucceeded, err
		}
		b := make([]byte, n[0])
		if _, err := io.ReadFull(c, b); err != nil {
			return "", "", socksSucceeded, err
		}
		host = string(b)
	default:
		return "", "", socksAddrNotSupported, fmt.Errorf("address type %d not supported", hdr[3])
	}
	var p [2]byte
	if _, err := io.ReadFull(c, p[:]); err != nil {
		return "", "", socksSucceeded, err
	}
	if hdr[1] != 0x01 { // CONNECT; BIND and UDP ASSOCIATE are not served
		return "", "", socksCommandNotSupported, fmt.Errorf("command %d not supported (CONNECT only)", hdr[1])
	}
	return host, strconv.Itoa(int(binary.BigEndian.Uint16(p[:]))), socksSucceeded, nil
}

// socksReply sends a reply with the bound address (zero when unknown).
func socksReply(c net.Conn, code byte, bound net.Addr) error {
	ap := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if bound != nil {
		if a, err := netip.ParseAddrPort(bound.String()); err == nil {
			ap = a
		}
	}
	b := []byte{5, code, 0}
	if a := ap.Addr().Unmap(); a.Is4() {
		b = append(append(b, socksIPv4), a.AsSlice()...)
	} else {
		b = append(append(b, socksIPv6), a.AsSlice()...)
	}
	b = binary.BigEndian.AppendUint16(b, ap.Port())
	_, err := c.Write(b)
	return err
}

// dialErrorCode is the reply for a failed dial.
func dialErrorCode(err error) byte {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return socksConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return socksNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return socksHostUnreachable
	}
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr), errors.Is(err, ErrNoSuchHost):
		return socksHostUnreachable
	case strings.Contains(err.Error(), "connection was refused"): // netstack's (gVisor's) words
		return socksConnectionRefused
	}
	return socksGeneralFailure
}
