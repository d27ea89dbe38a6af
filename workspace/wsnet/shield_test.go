package wsnet_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"meshwork.dev/workspace/wsnet"
)

// TestShield: a client on the machine's LAN reaches a workspace's port 22 through the machine
// until it is blocked; the block drops it, expires by itself, and Unblock lifts it early.
func TestShield(t *testing.T) {
	l, wm := newHost(t)
	c := testConfig(t)
	setup(t, wm, c)
	lan := l.Network("lan")
	wmAddr := wm.Attach(lan)
	client := l.Host("client")
	clientAddr := client.Attach(lan)
	client.Route(netip.PrefixFrom(c.IPv4, 32), wmAddr)
	if err := wm.Do(wsnet.EnableShield); err != nil {
		t.Fatal(err)
	}
	serveInside(t, c, ":22", func(conn net.Conn) { // answers once the client has said something
		conn.Read(make([]byte, 1))
		conn.Write([]byte("SSH-2.0-test\r\n"))
	})
	reach := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn, err := client.DialContext(ctx, "tcp", c.IPv4.String()+":22")
		if err != nil {
			return err
		}
		defer conn.Close()
		return hello(conn)
	}
	if err := reach(); err != nil {
		t.Fatalf("before any block: %v", err)
	}
	// A connection open when the block begins can still finish.
	open, err := client.DialContext(context.Background(), "tcp", c.IPv4.String()+":22")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	block := func(d time.Duration) {
		t.Helper()
		if err := wm.Do(func() error { return wsnet.Block(clientAddr, d) }); err != nil {
			t.Fatal(err)
		}
	}
	block(2 * time.Second)
	if err := reach(); err == nil {
		t.Fatalf("a blocked address still reaches the workspace's SSH port")
	}
	if err := hello(open); err != nil {
		t.Errorf("the connection open before the block: %v", err)
	}
	time.Sleep(2500 * time.Millisecond)
	if err := reach(); err != nil {
		t.Errorf("after the block expired: %v", err)
	}
	block(time.Minute)
	if err := reach(); err == nil {
		t.Fatalf("blocked again, still reaches")
	}
	for range 2 { // unblocking what is not blocked is fine
		if err := wm.Do(func() error { return wsnet.Unblock(clientAddr) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := reach(); err != nil {
		t.Errorf("after Unblock: %v", err)
	}
}

// hello says something on c and reads the answer to its end.
func hello(c net.Conn) error {
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		return err
	}
	b, err := io.ReadAll(c)
	if err == nil && len(b) == 0 {
		err = io.ErrUnexpectedEOF
	}
	return err
}
