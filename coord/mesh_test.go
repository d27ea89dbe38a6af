package coord

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"tailscale.com/client/local"
	"tailscale.com/tsnet"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
)

// startCoord runs a one-replica coord on loopback and returns its URL and admin key.
func startCoord(t *testing.T) (string, string) { return startCoordB(t) }

// startCoordB is startCoord for tests and benchmarks.
func startCoordB(t testing.TB) (string, string) {
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
		done <- Run(ctx, Config{ID: "c1", StateDir: state, HTTPAddr: httpAddr, ClusterAddr: clusterAddr,
			EphemeralGrace: time.Second, Logf: t.Logf})
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

// waitOnline waits until the API says each named node is online or not, as want says.
func waitOnline(t *testing.T, c *api.Client, want map[string]bool) {
	t.Helper()
	var nodes []api.Node
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		nodes = nil
		if err := c.Do(context.Background(), "GET", "/v1/nodes", nil, &nodes); err != nil {
			t.Fatal(err)
		}
		ok := true
		for _, n := range nodes {
			if on, named := want[n.Name]; named && n.Online != on {
				ok = false
			}
		}
		if ok {
			return
		}
	}
	t.Fatalf("nodes %+v; want online: %v", nodes, want)
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
	// Both hold map streams: both online, as the API says.
	waitOnline(t, c, map[string]bool{"alpha": true, "beta": true})

	// A workspace's name resolves on every node, as soon as it is created (on a workmachine).
	if err := c.Do(ctx, "PUT", "/v1/nodes/alpha/tags", api.SetTags{Tags: []string{fsm.WorkmachineTag}}, nil); err != nil {
		t.Fatal(err)
	}
	var ws api.Workspace
	if err := c.Do(ctx, "POST", "/v1/workspaces", api.CreateWorkspace{Name: "dev", Machine: "alpha", Image: "img"}, &ws); err != nil {
		t.Fatal(err)
	}
	if got := resolveA(t, ctx, b, "dev.mesh.internal."); got != ws.IPv4 {
		t.Errorf("dev.mesh.internal on beta = %q, want the workspace's %s", got, ws.IPv4)
	}
	if err := c.Do(ctx, "DELETE", "/v1/workspaces/dev", nil, nil); err != nil {
		t.Fatal(err)
	}

	// beta leaves: offline in the API, and in alpha's map.
	lc, err := a.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	waitOnline(t, c, map[string]bool{"alpha": true, "beta": false})
	waitUntil(t, 10*time.Second, "alpha sees beta offline", func() error {
		st, err := lc.Status(ctx)
		if err != nil {
			return err
		}
		for _, p := range st.Peer {
			if p.HostName == "beta" && p.Online {
				return fmt.Errorf("beta online in alpha's status")
			}
		}
		return nil
	})

	// A deleted node is cut off: its peer drops it from the map within seconds.
	if err := c.Do(ctx, "DELETE", "/v1/nodes/beta", nil, nil); err != nil {
		t.Fatal(err)
	}
	took := waitUntil(t, 10*time.Second, "alpha drops the deleted beta", func() error { return peersAre(ctx, lc, 0) })
	t.Logf("deleted node gone from its peer's map in %v", took.Round(time.Millisecond))
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel()
	if conn, err := a.Dial(dctx, "tcp", net.JoinHostPort(bIPs.String(), "8080")); err == nil {
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if b, _ := io.ReadAll(conn); len(b) > 0 {
			t.Errorf("alpha still reaches the deleted beta: read %q", b)
		}
		conn.Close()
	}
}

// TestJoinRefusals: a single-use key works once; expired, revoked and unknown keys are refused
// with a message saying why.
func TestJoinRefusals(t *testing.T) {
	url, admin := startCoord(t)
	c := &api.Client{Base: url, Token: admin}
	once := authKey(t, c, api.CreateAuthKey{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := tsnode(t, url, once, "first").Up(ctx); err != nil {
		t.Fatalf("first use of a single-use key: %v", err)
	}
	var k api.NewAuthKey
	if err := c.Do(ctx, "POST", "/v1/authkeys", api.CreateAuthKey{Reusable: true}, &k); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "DELETE", "/v1/authkeys/"+k.AuthKey.ID, nil, nil); err != nil {
		t.Fatal(err)
	}
	shortLived := authKey(t, c, api.CreateAuthKey{Reusable: true, Expiry: "1s"})
	time.Sleep(1100 * time.Millisecond)
	for _, tt := range []struct{ name, key, says string }{
		{"single-use key again", once, "single-use"},
		{"revoked key", k.Key, "revoked"},
		{"expired key", shortLived, "expired"},
		{"unknown key", "ak_nope_nope", "unknown auth key"},
	} {
		s := tsnode(t, url, tt.key, "second")
		lc, _ := s.LocalClient()
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		var msg string
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if st, err := lc.Status(ctx); err == nil && len(st.Health) > 0 {
				msg = strings.Join(st.Health, "; ")
				if strings.Contains(msg, tt.says) {
					break
				}
			}
		}
		if !strings.Contains(msg, tt.says) {
			t.Errorf("%s: health says %q; want the refusal, %q", tt.name, msg, tt.says)
		}
		s.Close()
	}
}

// TestEphemeral: a node joined with an ephemeral key is removed once it has been away for
// the grace period (1 s here).
func TestEphemeral(t *testing.T) {
	url, admin := startCoord(t)
	c := &api.Client{Base: url, Token: admin}
	key := authKey(t, c, api.CreateAuthKey{Ephemeral: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := tsnode(t, url, key, "brief")
	if _, err := n.Up(ctx); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		var nodes []api.Node
		if err := c.Do(ctx, "GET", "/v1/nodes", nil, &nodes); err != nil {
			t.Fatal(err)
		}
		return len(nodes)
	}
	if count() != 1 {
		t.Fatalf("the ephemeral node is not listed while up")
	}
	n.Close()
	took := waitUntil(t, 15*time.Second, "the ephemeral node unlisted after it went away", func() error {
		if n := count(); n != 0 {
			return fmt.Errorf("%d node(s) listed", n)
		}
		return nil
	})
	t.Logf("ephemeral node removed %v after it went away", took.Round(time.Millisecond))
}

// peersAre checks that the node behind lc has n peers.
func peersAre(ctx context.Context, lc *local.Client, n int) error {
	st, err := lc.Status(ctx)
	if err == nil && len(st.Peer) != n {
		err = fmt.Errorf("%d peer(s), want %d", len(st.Peer), n)
	}
	return err
}

// greet answers every connection on ln with msg.
func greet(ln net.Listener, msg string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, msg)
		c.Close()
	}
}

// reach reports whether from gets to's greeting on port within a couple of seconds.
func reach(ctx context.Context, from, to *tsnet.Server, port string) bool {
	ip, _ := to.TailscaleIPs()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := from.Dial(ctx, "tcp", net.JoinHostPort(ip.String(), port))
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, _ := io.ReadAll(c)
	return len(b) > 0
}

// TestPolicyFilter: with no policy every node reaches every port; a policy that lets
// tag:client reach tag:server on 8080 only is enforced by the nodes: the other direction
// and other ports are dropped.
func TestPolicyFilter(t *testing.T) {
	url, admin := startCoord(t)
	c := &api.Client{Base: url, Token: admin}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	client := tsnode(t, url, authKey(t, c, api.CreateAuthKey{Tags: []string{"tag:client"}}), "client")
	server := tsnode(t, url, authKey(t, c, api.CreateAuthKey{Tags: []string{"tag:server"}}), "server")
	for _, n := range []*tsnet.Server{client, server} {
		if _, err := n.Up(ctx); err != nil {
			t.Fatal(err)
		}
		for _, port := range []string{":8080", ":9090"} {
			ln, err := n.Listen("tcp", port)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go greet(ln, "hi")
		}
	}
	eventually := func(what string, want bool, f func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; {
			if f() == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: still %v after 20 s", what, !want)
			}
		}
	}
	eventually("no policy: server → client:9090", true, func() bool { return reach(ctx, server, client, "9090") })

	pol := `{"acls": [{"action": "accept", "src": ["tag:client"], "dst": ["tag:server:8080"]}]}`
	if err := c.Do(ctx, "PUT", "/v1/policy", api.Policy{Text: pol}, nil); err != nil {
		t.Fatal(err)
	}
	eventually("policy: server → client:9090 dropped", false, func() bool { return reach(ctx, server, client, "9090") })
	if !reach(ctx, client, server, "8080") {
		t.Errorf("client → server:8080 is allowed by the policy but failed")
	}
	if reach(ctx, client, server, "9090") {
		t.Errorf("client → server:9090 got through; the policy allows only 8080")
	}
	if reach(ctx, server, client, "8080") {
		t.Errorf("server → client:8080 got through; the policy allows only client → server")
	}
}

// resolveA asks node n's own resolver for name's A record, retrying for a few seconds while
// the record travels, and returns the address ("" if none came).
func resolveA(t *testing.T, ctx context.Context, n *tsnet.Server, name string) string {
	lc, err := n.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		b, _, err := lc.QueryDNS(ctx, name, "A")
		if err != nil {
			continue
		}
		var p dnsmessage.Parser
		if _, err := p.Start(b); err != nil {
			continue
		}
		p.SkipAllQuestions()
		for {
			h, err := p.AnswerHeader()
			if err != nil {
				break
			}
			if h.Type == dnsmessage.TypeA {
				a, _ := p.AResource()
				return netip.AddrFrom4(a.A).String()
			}
			p.SkipAnswer()
		}
	}
	return ""
}

// TestRestoreReachesNodes: restoring a backup reaches the nodes' maps: a node that joined
// after the backup was saved drops out of its peer's map, as in the restored state.
func TestRestoreReachesNodes(t *testing.T) {
	url, admin := startCoord(t)
	c := &api.Client{Base: url, Token: admin}
	key := authKey(t, c, api.CreateAuthKey{Reusable: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := tsnode(t, url, key, "alpha")
	if _, err := a.Up(ctx); err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if err := c.Do(ctx, "GET", "/v1/backup", nil, &backup); err != nil {
		t.Fatalf("backup save: %v", err)
	}
	if _, err := tsnode(t, url, key, "beta").Up(ctx); err != nil {
		t.Fatal(err)
	}
	lc, err := a.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "alpha has beta as its peer", func() error { return peersAre(ctx, lc, 1) })

	if err := c.Stream(ctx, "PUT", "/v1/backup", &backup, nil); err != nil {
		t.Fatal(err)
	}
	took := waitUntil(t, 15*time.Second, "alpha drops beta after restoring a backup from before beta joined", func() error { return peersAre(ctx, lc, 0) })
	t.Logf("the restore reached alpha's map in %v", took.Round(time.Millisecond))
}
