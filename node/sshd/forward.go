package sshd

import (
	"context"
	"net"
	"strconv"
	"sync"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

const dialTimeout = 30 * time.Second

// directTCPIP is the payload of a direct-tcpip channel open (RFC 4254 §7.2); forwarded-tcpip has
// the same shape.
type directTCPIP struct {
	DestAddr   string
	DestPort   uint32
	OriginAddr string
	OriginPort uint32
}

// handleDirectTCPIP serves ssh -L: a connection from inside the workspace through Config.Dial.
func (s *Server) handleDirectTCPIP(ctx gliderssh.Context, conn *gossh.ServerConn, nc gossh.NewChannel, workspace string) {
	var d directTCPIP
	if err := gossh.Unmarshal(nc.ExtraData(), &d); err != nil {
		nc.Reject(gossh.ConnectionFailed, "bad direct-tcpip request")
		return
	}
	if s.c.Dial == nil {
		nc.Reject(gossh.Prohibited, "port forwarding is not enabled")
		return
	}
	addr := net.JoinHostPort(d.DestAddr, strconv.FormatUint(uint64(d.DestPort), 10))
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	c, err := s.c.Dial(dctx, workspace, "tcp", addr)
	cancel()
	if err != nil {
		s.c.Logf("sshd: %s: -L %s for %s: %v", workspace, addr, conn.User(), err)
		nc.Reject(gossh.ConnectionFailed, "connect to "+addr+" failed")
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		c.Close()
		return
	}
	go gossh.DiscardRequests(reqs) // ends when ch closes
	splice(ch, c)
}

// forwards are one connection's -R listeners, by "host:port" as the client asked.
type forwards struct {
	mu  sync.Mutex
	lns map[string]net.Listener // guarded by mu
}

const keyForwards ctxKey = "meshwork-forwards" // *forwards

// tcpipForward serves ssh -R: a listener inside the workspace through Config.ListenIn whose
// connections go back to the client as forwarded-tcpip channels.
func (s *Server) tcpipForward(ctx gliderssh.Context, workspace string, req *gossh.Request) (bool, []byte) {
	var r struct {
		Addr string
		Port uint32
	}
	if s.c.ListenIn == nil || gossh.Unmarshal(req.Payload, &r) != nil || r.Port > 65535 {
		return false, nil
	}
	conn, _ := ctx.Value(gliderssh.ContextKeyConn).(*gossh.ServerConn)
	if conn == nil {
		return false, nil
	}
	key := net.JoinHostPort(r.Addr, strconv.FormatUint(uint64(r.Port), 10))
	ln, err := s.c.ListenIn(ctx, workspace, "tcp", key)
	if err != nil {
		s.c.Logf("sshd: %s: -R %s for %s: %v", workspace, key, conn.User(), err)
		return false, nil
	}
	port := r.Port
	if ta, ok := ln.Addr().(*net.TCPAddr); ok {
		port = uint32(ta.Port)
	}
	fw := s.forwardsOf(ctx)
	fw.mu.Lock()
	if fw.lns[key] != nil {
		fw.mu.Unlock()
		ln.Close()
		return false, nil
	}
	fw.lns[key] = ln
	fw.mu.Unlock()
	if !s.goTrack(func() { s.acceptForward(ctx, conn, ln, r.Addr, port) }) {
		ln.Close()
		return false, nil
	}
	if r.Port == 0 {
		return true, gossh.Marshal(struct{ Port uint32 }{port})
	}
	return true, nil
}

// forwardsOf returns the connection's forwards, making them (and the goroutine that closes them
// with the connection) on first use. Requests of one connection are handled one at a time.
func (s *Server) forwardsOf(ctx gliderssh.Context) *forwards {
	if fw, ok := ctx.Value(keyForwards).(*forwards); ok {
		return fw
	}
	fw := &forwards{lns: map[string]net.Listener{}}
	ctx.SetValue(keyForwards, fw)
	s.goTrack(func() {
		<-ctx.Done()
		fw.mu.Lock()
		defer fw.mu.Unlock()
		for k, ln := range fw.lns {
			ln.Close()
			delete(fw.lns, k)
		}
	})
	return fw
}

func (s *Server) cancelForward(ctx gliderssh.Context, _ string, req *gossh.Request) (bool, []byte) {
	var r struct {
		Addr string
		Port uint32
	}
	if gossh.Unmarshal(req.Payload, &r) != nil {
		return false, nil
	}
	fw, ok := ctx.Value(keyForwards).(*forwards)
	if !ok {
		return false, nil
	}
	key := net.JoinHostPort(r.Addr, strconv.FormatUint(uint64(r.Port), 10))
	fw.mu.Lock()
	ln := fw.lns[key]
	delete(fw.lns, key)
	fw.mu.Unlock()
	if ln == nil {
		return false, nil
	}
	ln.Close()
	return true, nil
}

// acceptForward hands each connection on ln to the client until ln closes.
func (s *Server) acceptForward(ctx context.Context, conn *gossh.ServerConn, ln net.Listener, bindAddr string, port uint32) {
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !s.goTrack(func() { s.forwardOne(conn, c, bindAddr, port) }) {
			c.Close()
			return
		}
		if ctx.Err() != nil {
			return
		}
	}
}

func (s *Server) forwardOne(conn *gossh.ServerConn, c net.Conn, bindAddr string, port uint32) {
	origin := addrPort(c.RemoteAddr())
	payload := gossh.Marshal(directTCPIP{DestAddr: bindAddr, DestPort: port, OriginAddr: origin.Addr().String(), OriginPort: uint32(origin.Port())})
	ch, reqs, err := conn.OpenChannel("forwarded-tcpip", payload)
	if err != nil {
		c.Close()
		return
	}
	go gossh.DiscardRequests(reqs)
	splice(ch, c)
}
