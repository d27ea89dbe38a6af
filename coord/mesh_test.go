package coord

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tailscale.com/tsnet"

	"meshwork.dev/coord/api"
)

// startCoord runs a one-replica coord on loopback and returns its URL and admin key.
func startCoord(t *testing.T) (string, string) {
	t.Helper()
	state := filepath.Join(t.TempDir(), "state")
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := httpLn.Addr().String()
	httpLn.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clusterAddr := udp.LocalAddr().String()
	udp.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{ID: "c1", StateDir: state, HTTPAddr: httpAddr, ClusterAddr: clusterAddr, Logf: t.Logf})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coord: %v", err)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(state, "admin.key"))
		if err == nil {
			return "http://" + httpAddr, strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			t.Fatalf("coord did not write admin.key: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func authKey(t *testing.T, c *api.Client, req api.CreateAuthKey) string {
	t.Helper()
	var k api.NewAuthKey
	if err := c.Do(context.Background(), "POST", "/v1/authkeys", req, &k); err != nil {
		t.Fatal(err)
	}
	return k.Key
}

func tsnode(t *testing.T, url, authKey, host string) *tsnet.Server {
	t.Helper()
	s := &tsnet.Server{Dir: filepath.Join(t.TempDir(), host), Hostname: host, ControlURL: url, AuthKey: authKey,
		Logf: func(f string, a ...any) { t.Logf(host+": "+f, a...) }, UserLogf: t.Logf}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestTwoNodesTalk: two tsnet nodes join through coord's control server with an auth key and
// open a TCP connection to each other over the mesh.
func TestTwoNodesTalk(t *testing.T) {
	url, admin := startCoord(t)
	c := &api.Client{Base: url, Token: admin}
	key := authKey(t, c, api.CreateAuthKey{Reusable: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	a, b := tsnode(t, url, key, "alpha"), tsnode(t, url, key, "beta")
	for _, n := range []*tsnet.Server{a, b} {
		if _, err := n.Up(ctx); err != nil {
			t.Fatalf("up: %v", err)
		}
	}
	ln, err := b.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(conn, "hello from beta\n")
			conn.Close()
		}
	}()
	bIPs, _ := b.TailscaleIPs()
	var got []byte
	for {
		conn, err := a.Dial(ctx, "tcp", net.JoinHostPort(bIPs.String(), "8080"))
		if err == nil {
			got, err = io.ReadAll(conn)
			conn.Close()
		}
		if err == nil && len(got) > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("alpha → beta over the mesh: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if string(got) != "hello from beta\n" {
		t.Errorf("read %q", got)
	}
	var nodes []api.Node
	if err := c.Do(ctx, "GET", "/v1/nodes", nil, &nodes); err != nil || len(nodes) != 2 {
		t.Errorf("nodes: %v %v", nodes, err)
	}
}
