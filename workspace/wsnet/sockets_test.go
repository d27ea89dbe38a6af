package wsnet_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"meshwork.dev/workspace/wsnet"
)

// TestSockets: a listener made in the workspace's namespace answers on the workspace's
// address from the host, and a dial from inside reaches the workspace's own loopback.
func TestSockets(t *testing.T) {
	_, h := newHost(t)
	c := testConfig(t)
	setup(t, h, c)
	serveInside(t, c, ":22", func(conn net.Conn) { conn.Write([]byte("inside")) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fromHost, err := h.DialContext(ctx, "tcp", c.IPv4.String()+":22")
	if err != nil {
		t.Fatalf("host → workspace:22: %v", err)
	}
	fromInside, err := wsnet.Dial(ctx, c, "tcp", "127.0.0.1:22")
	if err != nil {
		t.Fatalf("inside → 127.0.0.1:22: %v", err)
	}
	for name, conn := range map[string]net.Conn{"from the host": fromHost, "from inside": fromInside} {
		got, _ := io.ReadAll(conn)
		conn.Close()
		if string(got) != "inside" {
			t.Errorf("%s: read %q", name, got)
		}
	}
	if _, err := wsnet.Listen(wsnet.Config{Netns: "mwt-nonesuch"}, "tcp", ":22"); err == nil {
		t.Errorf("Listen in a missing namespace worked")
	}
}

// serveInside listens on addr in c's workspace namespace until the test ends and hands each
// connection to handle, closing it after.
func serveInside(t *testing.T, c wsnet.Config, addr string, handle func(net.Conn)) {
	ln, err := wsnet.Listen(c, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				handle(conn)
			}()
		}
	}()
}
