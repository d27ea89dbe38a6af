// Package control is the mesh control server: Tailscale's control protocol (ts2021, HTTP/2
// over Noise) served by every coord replica from its own replicated state, so stock
// Tailscale clients and tsnet programs join a Meshwork mesh.
package control

//lint:file-ignore SA1019 net/http cannot serve HTTP/2 on one already-accepted conn (the Noise channel); x/net/http2 can.

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"tailscale.com/control/controlhttp/controlhttpserver"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/secret"
	"meshwork.dev/overlay/meshdns"
)

// Backend is the replica as the control server uses it.
type Backend interface {
	Apply(ctx context.Context, c *fsm.Command) (*fsm.Result, error)
	Read(ctx context.Context, consistency string) (*fsm.Store, error)
}

// Server serves the control protocol. Set Backend and Key; the rest has defaults.
type Server struct {
	Backend Backend
	// Key is the control server's Noise key. Clients pin it, and may reach any replica, so
	// every replica must use the same one (DeriveKey).
	Key key.MachinePrivate
	// Domain is the MagicDNS domain; default meshdns.DefaultDomain.
	Domain string
	// DERPMap returns the DERP map sent to nodes; nil (or a nil map) sends an empty one
	// (direct paths only).
	DERPMap func() *tailcfg.DERPMap
	// EphemeralGrace is how long an ephemeral node may be away (no map stream) before it is
	// removed; default 30 s.
	EphemeralGrace time.Duration
	// Logf logs; nil discards.
	Logf func(format string, args ...any)
	// Secrets seals session recordings before they enter the Raft log; without it the
	// sessions are audited but their recordings are not kept.
	Secrets *secret.Key
	// WorkspaceAPI answers a request of workspace name's own API, as its owner
	// (adminapi.Server.ServeWorkspace); nil serves none.
	WorkspaceAPI func(w http.ResponseWriter, r *http.Request, name string)

	// Stream names this replica and its boot ("c1/3f9a…"); nodes streaming here are marked
	// online under it. "" keeps no online state (tests of maps alone).
	Stream string
	// OfflineGrace is how long a node may be without a map stream here before it is marked
	// offline; default 5 s. A client opens a new stream when its prefs change (a
	// workmachine's routes, at every workspace): its peers should not see it flap.
	OfflineGrace time.Duration

	mu      sync.Mutex              // guards streams, removals, online and ctx
	streams map[string]int          // open map streams by node ID
	online  map[string]*onlineState // online flags being written, by node ID
	ctx     context.Context         // for the online writers; good until Close
	cancel  context.CancelFunc
	writers sync.WaitGroup // online writers

	filterMu  sync.Mutex             // guards the compiled filter
	filterAt  filterKey              // the state it was compiled from
	compiled  []tailcfg.FilterRule   // the packet filter as of filterAt
	filterGen uint64                 // counts the changes of compiled
	removal   map[string]*time.Timer // pending removals of ephemeral nodes
}

// DeriveKey derives the control Noise key from a secret every replica holds (the cluster
// CA's key), so all replicas present the same control identity.
func DeriveKey(secret []byte) (key.MachinePrivate, error) {
	raw, err := hkdf.Key(sha256.New, secret, nil, "meshwork control noise key v1", 32)
	if err != nil {
		return key.MachinePrivate{}, err
	}
	raw[0] &= 248 // a Curve25519 scalar
	raw[31] = raw[31]&127 | 64
	var k key.MachinePrivate
	err = k.UnmarshalText([]byte("privkey:" + hex.EncodeToString(raw)))
	return k, err
}

// maxRequest bounds a request body inside the Noise channel.
const maxRequest = 1 << 20

// Handler serves the control routes: /key and /ts2021.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /key", s.serveKey)
	mux.HandleFunc("POST /ts2021", s.serveNoise)
	mux.HandleFunc("GET /ts2021", s.serveNoise) // WebSocket clients
	return mux
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Server) domain() string {
	if s.Domain == "" {
		return meshdns.DefaultDomain
	}
	return s.Domain
}

func (s *Server) serveKey(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	pub := s.Key.Public()
	json.NewEncoder(w).Encode(&tailcfg.OverTLSPublicKeyResponse{PublicKey: pub})
}

// serveNoise upgrades to the Noise channel and serves HTTP/2 inside it; the peer's machine
// key, proven by the handshake, identifies the machine on every request.
func (s *Server) serveNoise(w http.ResponseWriter, r *http.Request) {
	conn, err := controlhttpserver.AcceptHTTP(r.Context(), w, r, s.Key, nil)
	if err != nil {
		s.logf("control: upgrade from %s: %v", r.RemoteAddr, err)
		return
	}
	defer conn.Close()
	mk := conn.Peer()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /machine/register", func(w http.ResponseWriter, r *http.Request) { s.serveRegister(w, r, mk) })
	mux.HandleFunc("POST /machine/map", func(w http.ResponseWriter, r *http.Request) { s.serveMap(w, r, mk) })
	mux.HandleFunc("GET /machine/meshwork/state", func(w http.ResponseWriter, r *http.Request) { s.serveMachineState(w, r, mk) })
	mux.HandleFunc("POST /machine/meshwork/report", func(w http.ResponseWriter, r *http.Request) { s.serveMachineReport(w, r, mk) })
	mux.HandleFunc("POST /machine/meshwork/session", func(w http.ResponseWriter, r *http.Request) { s.serveSession(w, r, mk) })
	mux.HandleFunc(workspaceAPIPrefix, func(w http.ResponseWriter, r *http.Request) { s.serveWorkspaceAPI(w, r, mk) })
	mux.HandleFunc("/machine/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, io.LimitReader(r.Body, maxRequest)) // set-dns, update-health, ...: accepted, unused
	})
	var h2 http2.Server
	h2.ServeConn(conn, &http2.ServeConnOpts{Context: r.Context(), BaseConfig: &http.Server{Handler: mux}})
}

// apply commits one command and returns its error, if any.
func (s *Server) apply(ctx context.Context, op, actor, source string, payload any) error {
	c, err := fsm.NewCommand(op, actor, source, payload)
	if err != nil {
		return err
	}
	res, err := s.Backend.Apply(ctx, c)
	if err != nil {
		return err
	}
	return res.Decode(nil)
}

// decode reads a JSON request body.
func decode(r *http.Request, v any) error {
	return json.NewDecoder(io.LimitReader(r.Body, maxRequest)).Decode(v)
}
