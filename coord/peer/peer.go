// Package peer is coord-to-coord traffic: one UDP port speaking QUIC with mutual TLS from the
// cluster CA, split by ALPN into the Raft stream layer and a small request/response RPC (writes
// forwarded to the leader, replicas joining).
package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// ALPN protocols on the cluster port.
const (
	alpnRaft = "meshwork-raft/1"
	alpnRPC  = "meshwork-rpc/1"
)

// A Handler serves one RPC method. peer is the calling replica's verified ID.
type Handler func(ctx context.Context, peer string, req []byte) ([]byte, error)

// Transport is a replica's cluster port. Make it with Listen.
type Transport struct {
	id    *Identity
	addr  string // advertised address, as peers dial it
	logf  func(string, ...any)
	udp   *net.UDPConn
	qt    *quic.Transport
	ln    *quic.Listener
	quicC *quic.Config

	ctx    context.Context // good until Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the transport started

	mu       sync.Mutex // guards handlers and conns
	handlers map[string]Handler
	conns    map[connKey]*quic.Conn // outgoing, per peer and protocol

	raftCh chan net.Conn // accepted Raft streams
}

type connKey struct{ addr, alpn string }

// Listen opens the cluster port at addr (host:port, as the other replicas reach it).
func Listen(addr string, id *Identity, logf func(string, ...any)) (*Transport, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster address %q: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	t := &Transport{
		id: id, addr: addr, logf: logf, udp: udp,
		qt:       &quic.Transport{Conn: udp},
		handlers: map[string]Handler{},
		conns:    map[connKey]*quic.Conn{},
		raftCh:   make(chan net.Conn),
		quicC: &quic.Config{
			KeepAlivePeriod:      500 * time.Millisecond,
			MaxIdleTimeout:       3 * time.Second,
			HandshakeIdleTimeout: 3 * time.Second,
			MaxIncomingStreams:   4096,
		},
	}
	if ua.Port == 0 {
		t.addr = udp.LocalAddr().String()
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	if t.ln, err = t.qt.Listen(id.tlsConfig(alpnRaft, alpnRPC), t.quicC); err != nil {
		udp.Close()
		return nil, err
	}
	t.wg.Add(1)
	go t.acceptLoop()
	return t, nil
}

// ServeNonQUIC answers the other packets arriving on the cluster port (STUN binding
// requests start with two zero bits, which no QUIC packet does): reply returns what to send
// back, or nil. Call once; the goroutine ends with Close.
func (t *Transport) ServeNonQUIC(reply func(pkt []byte, from net.Addr) []byte) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := t.qt.ReadNonQUICPacket(t.ctx, buf)
			if err != nil {
				return
			}
			if out := reply(buf[:n], from); out != nil {
				t.qt.WriteTo(out, from)
			}
		}
	}()
}

// Addr is the address peers dial.
func (t *Transport) Addr() string { return t.addr }

// Close stops the transport and waits for its goroutines. Idempotent.
func (t *Transport) Close() error {
	t.cancel()
	t.ln.Close()
	t.mu.Lock()
	for k, c := range t.conns {
		c.CloseWithError(0, "closing")
		delete(t.conns, k)
	}
	t.mu.Unlock()
	t.qt.Close()
	t.wg.Wait()
	return nil
}

func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept(t.ctx)
		if err != nil {
			return
		}
		t.wg.Add(1)
		go t.serveConn(c)
	}
}

// serveConn accepts the streams of one incoming connection.
func (t *Transport) serveConn(c *quic.Conn) {
	defer t.wg.Done()
	alpn := c.ConnectionState().TLS.NegotiatedProtocol
	peer := ""
	if certs := c.ConnectionState().TLS.PeerCertificates; len(certs) > 0 {
		peer = certs[0].Subject.CommonName
	}
	for {
		s, err := c.AcceptStream(t.ctx)
		if err != nil {
			return
		}
		switch alpn {
		case alpnRaft:
			select {
			case t.raftCh <- &streamConn{Stream: s, c: c}:
			case <-t.ctx.Done():
				s.CancelRead(0)
				s.Close()
				return
			}
		case alpnRPC:
			t.wg.Add(1)
			go t.serveRPC(peer, s)
		}
	}
}

// conn returns a live connection to addr for alpn, dialing when there is none.
func (t *Transport) conn(ctx context.Context, addr, alpn string) (*quic.Conn, error) {
	k := connKey{addr, alpn}
	t.mu.Lock()
	c := t.conns[k]
	t.mu.Unlock()
	if c != nil && c.Context().Err() == nil {
		return c, nil
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	c, err = t.qt.Dial(ctx, ua, t.id.tlsConfig(alpn), t.quicC)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.conns[k]; old != nil && old.Context().Err() == nil {
		c.CloseWithError(0, "duplicate")
		return old, nil
	}
	if t.ctx.Err() != nil {
		c.CloseWithError(0, "closing")
		return nil, errors.New("transport closed")
	}
	t.conns[k] = c
	return c, nil
}

// streamConn is a QUIC stream as a net.Conn.
type streamConn struct {
	*quic.Stream
	c *quic.Conn
}

func (s *streamConn) LocalAddr() net.Addr  { return s.c.LocalAddr() }
func (s *streamConn) RemoteAddr() net.Addr { return s.c.RemoteAddr() }

// Close ends both directions of the stream.
func (s *streamConn) Close() error {
	s.Stream.CancelRead(0)
	return s.Stream.Close()
}

var _ net.Conn = (*streamConn)(nil)
