package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// echoServer accepts on loopback and echoes what it reads, prefixed with "echo:".
func echoServer(t *testing.T, network, addr string) net.Listener {
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback here: %v", network, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, "echo:")
				io.Copy(c, c)
			}()
		}
	}()
	return ln
}

// startSOCKS serves a proxy on loopback whose Resolve knows "peer" and "peer.mesh.internal"
// as peerIP; it records every address it dials.
func startSOCKS(t *testing.T, peerIP netip.Addr) (addr string, dialed func() []string) {
	var mu sync.Mutex
	var got []string
	s := &SOCKS5{
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			got = append(got, addr)
			mu.Unlock()
			return new(net.Dialer).DialContext(ctx, network, addr)
		},
		Resolve: func(ctx context.Context, host string) (netip.Addr, error) {
			switch host {
			case "peer", "peer.mesh.internal":
				return peerIP, nil
			case "gone.mesh.internal":
				return netip.Addr{}, fmt.Errorf("no peer %q: %w", host, ErrNoSuchHost)
			}
			return netip.Addr{}, errors.New("no such peer")
		},
		Logf: t.Logf,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrProxyClosed) {
			t.Errorf("Serve after Close: %v, want ErrProxyClosed", err)
		}
	})
	return ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// socksAddr encodes a request's address: IPv4, IPv6 or a domain.
func socksAddr(host string, port uint16) []byte {
	var b []byte
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() {
		b = append([]byte{socksIPv4}, ip.AsSlice()...)
	} else if err == nil {
		b = append([]byte{socksIPv6}, ip.AsSlice()...)
	} else {
		b = append([]byte{socksDomain, byte(len(host))}, host...)
	}
	return binary.BigEndian.AppendUint16(b, port)
}

func TestSOCKS5(t *testing.T) {
	echo4 := echoServer(t, "tcp4", "127.0.0.1:0")
	port := uint16(echo4.Addr().(*net.TCPAddr).Port)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := uint16(closed.Addr().(*net.TCPAddr).Port)
	closed.Close()
	proxy, dialed := startSOCKS(t, netip.MustParseAddr("127.0.0.1"))
	greet := []byte{5, 1, 0x00}
	connect := func(addr []byte) []byte { return append(append(clone(greet), 5, 1, 0), addr...) }

	tests := []struct {
		name      string
		send      []byte
		wantReply []byte // greeting answer and the reply's first two bytes
		wantDial  string // what the proxy dialed ("" for nothing)
		wantEcho  bool
	}{
		{"ipv4", connect(socksAddr("127.0.0.1", port)), []byte{5, 0, 5, socksSucceeded}, fmt.Sprintf("127.0.0.1:%d", port), true},
		{"bare mesh name", connect(socksAddr("peer", port)), []byte{5, 0, 5, socksSucceeded}, fmt.Sprintf("127.0.0.1:%d", port), true},
		{"full mesh name", connect(socksAddr("peer.mesh.internal", port)), []byte{5, 0, 5, socksSucceeded}, fmt.Sprintf("127.0.0.1:%d", port), true},
		{"other names are left to Dial", connect(socksAddr("localhost", port)), []byte{5, 0, 5, socksSucceeded}, fmt.Sprintf("localhost:%d", port), true},
		{"a mesh name no peer has", connect(socksAddr("gone.mesh.internal", port)), []byte{5, 0, 5, socksHostUnreachable}, "", false},
		{"refused", connect(socksAddr("127.0.0.1", closedPort)), []byte{5, 0, 5, socksConnectionRefused}, fmt.Sprintf("127.0.0.1:%d", closedPort), false},
		{"bind is not served", append(clone(greet), append([]byte{5, 2, 0}, socksAddr("127.0.0.1", port)...)...), []byte{5, 0, 5, socksCommandNotSupported}, "", false},
		{"udp associate is not served", append(clone(greet), append([]byte{5, 3, 0}, socksAddr("127.0.0.1", port)...)...), []byte{5, 0, 5, socksCommandNotSupported}, "", false},
		{"unknown address type", append(clone(greet), 5, 1, 0, 9, 1, 2, 3, 4, 0, 80), []byte{5, 0, 5, socksAddrNotSupported}, "", false},
		{"authentication only", []byte{5, 1, 0x02}, []byte{5, 0xff}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(dialed())
			c, err := net.Dial("tcp", proxy)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write(tt.send)
			got := make([]byte, len(tt.wantReply))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("reading the reply: %v", err)
			}
			if diff := cmp.Diff(tt.wantReply, got); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
			var wantDial []string
			if tt.wantDial != "" {
				wantDial = []string{tt.wantDial}
			}
			if got := dialed()[before:]; !slices.Equal(wantDial, got) {
				t.Errorf("dialed %q, want %q", got, wantDial)
			}
			if len(tt.wantReply) == 2 {
				return
			}
			rest := make([]byte, 8) // ATYP IPv4 (4 bytes) port: what we always send back for IPv4
			io.ReadFull(c, rest)
			if !tt.wantEcho {
				if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
					t.Errorf("after a refusal the proxy kept the connection open")
				}
				return
			}
			io.WriteString(c, "hi")
			buf := make([]byte, len("echo:hi"))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "echo:hi" {
				t.Errorf("through the proxy read %q, %v; want echo:hi", buf, err)
			}
		})
	}
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// TestSOCKS5IPv6: an IPv6 request reaches an IPv6 server and the reply's bound address is
// IPv6 too.
func TestSOCKS5IPv6(t *testing.T) {
	echo6 := echoServer(t, "tcp6", "[::1]:0")
	proxy, _ := startSOCKS(t, netip.Addr{})
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(append([]byte{5, 1, 0, 5, 1, 0}, socksAddr("::1", uint16(echo6.Addr().(*net.TCPAddr).Port))...))
	reply := make([]byte, 2+4+16+2)
	if _, err := io.ReadFull(c, reply); err != nil {
		t.Fatal(err)
	}
	if want := []byte{5, 0, 5, 0, 0, socksIPv6}; !bytes.Equal(reply[:6], want) {
		t.Fatalf("reply %v, want it to start %v", reply, want)
	}
	io.WriteString(c, "v6")
	buf := make([]byte, len("echo:v6"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "echo:v6" {
		t.Errorf("read %q, %v", buf, err)
	}
}

// TestSOCKS5Close: Close ends connections in flight and returns only when they are done.
func TestSOCKS5Close(t *testing.T) {
	echo := echoServer(t, "tcp4", "127.0.0.1:0")
	s := &SOCKS5{Dial: new(net.Dialer).DialContext}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(append([]byte{5, 1, 0, 5, 1, 0}, socksAddr("127.0.0.1", uint16(echo.Addr().(*net.TCPAddr).Port))...))
	io.ReadFull(c, make([]byte, 2+10))
	s.Close()
	s.Close() // idempotent
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("after Close the client's connection did not end: %v", err)
	}
	if err := s.Serve(ln); !errors.Is(err, ErrProxyClosed) {
		t.Errorf("Serve after Close = %v, want ErrProxyClosed", err)
	}
}
