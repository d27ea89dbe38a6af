// Package coord runs a coord replica: the Raft node holding Meshwork's desired state, and the
// admin API in front of it.
package coord

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	"meshwork.dev/coord/adminapi"
	"meshwork.dev/coord/api"
	"meshwork.dev/coord/control"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/relay"
	"meshwork.dev/coord/replica"
	"meshwork.dev/coord/secret"
	"meshwork.dev/overlay/ipam"
)

// Config says how to run a replica. StateDir and ClusterAddr are required.
type Config struct {
	ID              string
	StateDir        string
	HTTPAddr        string // admin API listen address
	ClusterAddr     string // UDP, reachable by the other replicas
	Join            string // a member's admin API URL (first start only)
	JoinToken       string
	BootstrapExpect int           // writes are refused until this many voters are members
	Domain          string        // MagicDNS domain of the mesh; default mesh.internal
	DERPAddr        string        // TCP address of the embedded DERP relay (TLS); default: ClusterAddr's
	EphemeralGrace  time.Duration // how long an ephemeral node may be away before removal
	SecretKeyFile   string        // key that encrypts secrets at rest (later: environments, exits)
	TLSCert, TLSKey string        // serve the admin API over TLS
	RaftHeartbeat   time.Duration // see replica.Config.HeartbeatTimeout; 0: its default
	// InsecureJoin lets replicas join over plain HTTP between machines, both ways: this one
	// through an http:// URL, and others through this one's admin API without TLS. Labs
	// only: the answer to a join carries the cluster's CA key.
	InsecureJoin bool
	Logf         func(format string, args ...any)
}

// Run runs the replica until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logf == nil {
		cfg.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	if os.Getenv("GOGC") == "" {
		// The state store's immutable trees allocate on every write; trading memory for
		// fewer collections is worth it on a control node.
		debug.SetGCPercent(400)
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return errors.New("coord: --tls-cert and --tls-key go together")
	}
	sk, err := secretKey(cfg)
	if err != nil {
		return err
	}
	// Bind the admin API first: joining replicas and clients find a port that answers.
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("coord: admin API address: %w", err)
	}
	defer ln.Close()
	f := fsm.New(cfg.Logf)
	b := &backend{fsm: f, expect: max(cfg.BootstrapExpect, 1), logf: cfg.Logf}
	var ctrl atomic.Value // http.Handler of the control server, set once the replica is open
	mux := http.NewServeMux()
	admin := &adminapi.Server{Backend: b, Logf: cfg.Logf, Secrets: sk, InsecureJoin: cfg.InsecureJoin, Domain: cfg.Domain,
		Policies: control.Policies{}}
	mux.Handle("/", admin.Handler())
	controlRoutes := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, ok := ctrl.Load().(http.Handler); ok {
			h.ServeHTTP(w, r)
			return
		}
		http.Error(w, "coord is starting", http.StatusServiceUnavailable)
	})
	mux.Handle("/key", controlRoutes)
	mux.Handle("/ts2021", controlRoutes)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- serve(srv, ln, cfg) }()
	defer srv.Close()

	rep, err := replica.Open(ctx, replica.Config{
		ID: cfg.ID, StateDir: cfg.StateDir, ClusterAddr: cfg.ClusterAddr, HTTPAddr: cfg.HTTPAddr,
		Join: cfg.Join, JoinToken: cfg.JoinToken, HeartbeatTimeout: cfg.RaftHeartbeat,
		InsecureJoin: cfg.InsecureJoin, Logf: cfg.Logf,
	}, f)
	if err != nil {
		return err
	}
	defer rep.Close()
	b.start(rep)
	mesh, err := startMesh(ctx, rep, b, cfg, sk, admin.ServeWorkspace)
	if err != nil {
		return err
	}
	defer mesh.close()
	ctrl.Store(mesh.control.Handler())
	streamsCtx, streamsStop := context.WithCancel(ctx)
	streamsDone := make(chan struct{})
	go func() {
		defer close(streamsDone)
		b.endStreams(streamsCtx, rep.ID(), mesh.control.Stream)
	}()
	defer func() {
		streamsStop()
		<-streamsDone
	}()
	cfg.Logf("coord %s: admin API on %s, cluster port %s, state in %s", rep.ID(), ln.Addr(), cfg.ClusterAddr, cfg.StateDir)

	initCtx, initStop := context.WithCancel(ctx)
	initDone := make(chan struct{})
	go func() {
		defer close(initDone)
		b.initCluster(initCtx, ipam.ULA)
	}()
	defer func() {
		initStop()
		<-initDone
	}()
	if err := ensureAdmin(ctx, b, cfg.StateDir, rep.Bootstrapped()); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		cfg.Logf("coord %s: shutting down", rep.ID())
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		return nil
	case err := <-serveErr:
		return fmt.Errorf("coord: admin API: %w", err)
	}
}

// meshServices are what a replica runs for the mesh: the control server, the DERP relay
// (with STUN on the cluster port) and the goroutine keeping the DERP map in step with the
// cluster's members.
type meshServices struct {
	control *control.Server
	relay   *relay.Relay
	stop    context.CancelFunc // ends the members follower
	done    chan struct{}      // closed when it has ended
}

func startMesh(ctx context.Context, rep *replica.Replica, b *backend, cfg Config, sk *secret.Key,
	workspaceAPI func(http.ResponseWriter, *http.Request, string)) (*meshServices, error) {
	noiseKey, err := control.DeriveKey(rep.ClusterSecret())
	if err != nil {
		return nil, err
	}
	rep.Transport().ServeNonQUIC(relay.STUNReply) // STUN shares the cluster port's UDP
	derp, err := startRelay(rep, b, cfg)
	if err != nil {
		return nil, fmt.Errorf("coord: DERP relay: %w", err)
	}
	m := &meshServices{relay: derp, done: make(chan struct{})}
	ctx, m.stop = context.WithCancel(ctx)
	var derpMap atomic.Pointer[tailcfg.DERPMap]
	syncMembers(rep, derp, &derpMap)
	go func() {
		defer close(m.done)
		followMembers(ctx, rep, derp, &derpMap)
	}()
	m.control = &control.Server{Backend: b, Key: noiseKey, Domain: cfg.Domain, DERPMap: derpMap.Load,
		EphemeralGrace: cfg.EphemeralGrace, Logf: cfg.Logf, Secrets: sk, Stream: rep.ID() + "/" + randomKey()[:8],
		WorkspaceAPI: workspaceAPI}
	return m, nil
}

// close stops the mesh services and waits for them.
func (m *meshServices) close() {
	m.control.Close()
	m.stop()
	<-m.done
	m.relay.Close()
}

func serve(srv *http.Server, ln net.Listener, cfg Config) error {
	if cfg.TLSCert == "" {
		cfg.Logf("coord: serving the admin API over plain HTTP (labs and demos only: pass --tls-cert/--tls-key in a real deployment)")
		return srv.Serve(ln)
	}
	srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	return srv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
}

// startRelay serves DERP on the cluster address over TCP, with a certificate from the
// cluster CA and the cluster's mesh key.
func startRelay(rep *replica.Replica, b *backend, cfg Config) (*relay.Relay, error) {
	host, portStr, err := net.SplitHostPort(cfg.ClusterAddr)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, fmt.Errorf("--cluster %q: the host must be an IP address nodes and replicas reach", cfg.ClusterAddr)
	}
	cert, err := rep.Identity().ServerCert(ip)
	if err != nil {
		return nil, err
	}
	raw, err := hkdf.Key(sha256.New, rep.ClusterSecret(), nil, "meshwork derp mesh key v1", 32)
	if err != nil {
		return nil, err
	}
	meshKey, err := key.ParseDERPMesh(hex.EncodeToString(raw))
	if err != nil {
		return nil, err
	}
	port, _ := strconv.Atoi(portStr)
	return relay.Listen(relay.Config{Addr: cfg.ClusterAddr, Name: rep.ID(), STUNPort: port, Cert: cert,
		CAs: rep.Identity().Pool(), MeshKey: meshKey, Admit: b.onMesh, Logf: cfg.Logf})
}

// followMembers keeps the DERP map and the relay's mesh in step with the cluster's members
// (syncMembers every 2 s) until ctx ends.
func followMembers(ctx context.Context, rep *replica.Replica, derp *relay.Relay, m *atomic.Pointer[tailcfg.DERPMap]) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
		syncMembers(rep, derp, m)
	}
}

// syncMembers sets the DERP map to every member's relay, in ID order (each relay sits on its
// replica's cluster address), and meshes this relay with the others.
func syncMembers(rep *replica.Replica, derp *relay.Relay, m *atomic.Pointer[tailcfg.DERPMap]) {
	st, err := rep.Status()
	if err != nil {
		return
	}
	members := slices.Clone(st.Members)
	slices.SortFunc(members, func(a, b api.Member) int { return strings.Compare(a.ID, b.ID) })
	var nodes []*tailcfg.DERPNode
	var addrs []string
	for _, mb := range members {
		_, port, _ := net.SplitHostPort(mb.Address)
		p, _ := strconv.Atoi(port)
		if n, err := relay.Node(mb.ID, mb.Address, p); err == nil {
			nodes = append(nodes, n)
			addrs = append(addrs, mb.Address)
		}
	}
	if next := relay.Map(nodes...); !reflect.DeepEqual(next, m.Load()) {
		m.Store(next) // a new map goes to every node: only when it changed
	}
	derp.MeshWith(addrs)
}

// secretKey loads the key that seals secrets at rest: --secret-key-file, else the
// environment's MESHWORK_SECRET_KEY, else none (and writes that need it are refused).
func secretKey(cfg Config) (*secret.Key, error) {
	var k secret.Key
	var err error
	switch {
	case cfg.SecretKeyFile != "":
		if rel, rerr := filepath.Rel(cfg.StateDir, cfg.SecretKeyFile); rerr == nil && !strings.HasPrefix(rel, "..") {
			return nil, fmt.Errorf("coord: --secret-key-file %s is inside the state directory; keep the key apart from the data it protects", cfg.SecretKeyFile)
		}
		k, err = secret.Load(cfg.SecretKeyFile)
	case os.Getenv("MESHWORK_SECRET_KEY") != "":
		k, err = secret.Parse(os.Getenv("MESHWORK_SECRET_KEY"))
	default:
		cfg.Logf("coord: no --secret-key-file: environments (whose compose files hold secrets) cannot be created, and SSH sessions are audited but not recorded")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("coord: %w", err)
	}
	return &k, nil
}

// adminKeyFile is where a new cluster's first admin key is written.
func adminKeyFile(stateDir string) string { return filepath.Join(stateDir, "admin.key") }

// ensureAdmin makes the first admin and writes its API key to STATE/admin.key (0600) on the
// replica that bootstrapped the cluster. A crash between the two is mended on the next start:
// the bootstrap marker stays until the key file is written.
func ensureAdmin(ctx context.Context, b *backend, stateDir string, bootstrapped bool) error {
	marker := filepath.Join(stateDir, "bootstrap-pending")
	if bootstrapped {
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return err
		}
	}
	if _, err := os.Stat(marker); err != nil {
		return nil
	}
	key, err := b.createAdmin(ctx)
	if err != nil {
		return fmt.Errorf("coord: creating the first admin: %w", err)
	}
	// Written whole, then renamed into place: whoever waits for the file never reads it empty.
	tmp := adminKeyFile(stateDir) + ".tmp"
	if err := os.WriteFile(tmp, []byte(key+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, adminKeyFile(stateDir)); err != nil {
		return err
	}
	b.logf("coord: the first admin's API key is in %s", adminKeyFile(stateDir))
	return os.Remove(marker)
}
