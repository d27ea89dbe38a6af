// Package adminapi serves the admin REST API (contract: DESIGN.md, "the admin API") on any
// coord replica: authentication by API key, members confined to their own things, writes
// committed through Raft, reads at the consistency asked for.
package adminapi

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
	"meshwork.dev/coord/secret"
	"meshwork.dev/overlay/meshdns"
)

// Backend is the replica as the API uses it.
type Backend interface {
	// Apply commits a command (forwarding it to the leader) and returns its result.
	Apply(ctx context.Context, c *fsm.Command) (*fsm.Result, error)
	// Read returns the state once it satisfies consistency (api.Stale, ...).
	Read(ctx context.Context, consistency string) (*fsm.Store, error)
	Status() (api.Cluster, error)
	RemoveMember(ctx context.Context, id string) error
	Admit(req api.JoinRequest) (*api.JoinResponse, error)
	JoinToken() (string, error)
	Unsupported() bool
}

// Server is the admin API. Set Backend; Logf and Secrets may be nil.
type Server struct {
	Backend Backend
	Logf    func(format string, args ...any)
	// Secrets seals what must be encrypted at rest (environments' compose files) before it
	// enters the Raft log. Without it, such writes are refused.
	Secrets *secret.Key
	// LoginLimit is how many failed logins one address (an IPv6 /64) may make in a minute
	// before it is refused, unchecked, for the rest of that minute; default 10.
	LoginLimit int
	// Domain is the mesh's DNS domain, as the control server has it (services are named
	// <service>.<env>.<domain>); default meshdns.DefaultDomain.
	Domain string
	// InsecureJoin admits replicas over plain HTTP from other machines (labs only): see join.
	InsecureJoin bool
	// Policies runs a policy's tests and explains it against the state (control.Policies);
	// nil refuses policies with tests, and explain.
	Policies PolicyEngine

	metrics metrics
	joins   joinSlots
	logins  loginGuard
	wsMux   workspaceMux
}

// joinSlots bounds the join requests handled at once: they are the only route served before
// authentication, so what an unauthenticated caller can make the replica hold stays small.
type joinSlots struct {
	once sync.Once
	ch   chan struct{}
}

func (j *joinSlots) acquire() bool {
	j.once.Do(func() { j.ch = make(chan struct{}, 4) })
	select {
	case j.ch <- struct{}{}:
		return true
	default:
		return false
	}
}

func (j *joinSlots) release() { <-j.ch }

// caller is who sent a request.
type caller struct {
	user  *fsm.User
	keyID string
	addr  string      // source address, for the audit log
	idem  string      // the scope of the request's Idempotency-Key; "": none
	body  *bodyDigest // the request's body, hashed as it is read, when idem is set
}

func (s *Server) domain() string {
	if s.Domain == "" {
		return meshdns.DefaultDomain
	}
	return s.Domain
}

func (c *caller) admin() bool { return c.user.Role == fsm.RoleAdmin }

// handlerFunc is a route that knows its caller and may fail with an error to report.
type handlerFunc func(w http.ResponseWriter, r *http.Request, c *caller) error

// Handler is the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("POST /v1/cluster/join", s.join) // authenticated by the join token
	for pattern, h := range s.routes() {
		mux.Handle(pattern, s.authed(pattern, h))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, notFound("no route %s %s; see DESIGN.md's admin API", r.Method, r.URL.Path))
	})
	return mux
}

// routes are the authenticated routes.
func (s *Server) routes() map[string]handlerFunc {
	return map[string]handlerFunc{
		"POST /v1/users":                    s.createUser,
		"GET /v1/users":                     s.listUsers,
		"GET /v1/users/{name}":              s.getUser,
		"DELETE /v1/users/{name}":           s.deleteUser,
		"POST /v1/apikeys":                  s.createAPIKey,
		"GET /v1/apikeys":                   s.listAPIKeys,
		"DELETE /v1/apikeys/{id}":           s.revokeAPIKey,
		"POST /v1/apikeys/{id}/rotate":      s.rotateAPIKey,
		"POST /v1/authkeys":                 s.createAuthKey,
		"GET /v1/authkeys":                  s.listAuthKeys,
		"DELETE /v1/authkeys/{id}":          s.revokeAuthKey,
		"GET /v1/nodes":                     s.listNodes,
		"DELETE /v1/nodes/{name}":           s.deleteNode,
		"PUT /v1/nodes/{name}/tags":         s.tagNode,
		"POST /v1/workspaces":               s.createWorkspace,
		"GET /v1/workspaces":                s.listWorkspaces,
		"GET /v1/workspaces/{name}":         s.getWorkspace,
		"POST /v1/workspaces/{name}/start":  s.startWorkspace,
		"POST /v1/workspaces/{name}/stop":   s.stopWorkspace,
		"DELETE /v1/workspaces/{name}":      s.deleteWorkspace,
		"PUT /v1/workspaces/{name}/env":     s.connectWorkspace,
		"POST /v1/workspaces/{name}/exit":   s.setWorkspaceExit,
		"POST /v1/exits":                    s.createExit,
		"GET /v1/exits":                     s.listExits,
		"GET /v1/exits/{name}":              s.getExit,
		"DELETE /v1/exits/{name}":           s.deleteExit,
		"POST /v1/environments":             s.createEnvironment,
		"GET /v1/environments":              s.listEnvironments,
		"GET /v1/environments/{name}":       s.getEnvironment,
		"POST /v1/environments/{name}/up":   s.upEnvironment,
		"POST /v1/environments/{name}/down": s.downEnvironment,
		"DELETE /v1/environments/{name}":    s.deleteEnvironment,
		"PUT /v1/environments/{name}":       s.updateEnvironment,
		"POST /v1/intercepts":               s.createIntercept,
		"GET /v1/intercepts":                s.listIntercepts,
		"GET /v1/intercepts/{id}":           s.getIntercept,
		"DELETE /v1/intercepts/{id}":        s.deleteIntercept,
		"GET /v1/policy":                    s.getPolicy,
		"PUT /v1/policy":                    s.setPolicy,
		"POST /v1/policy/test":              s.testPolicy,
		"POST /v1/policy/explain":           s.explainPolicy,
		"GET /v1/audit":                     s.listAudit,
		"GET /v1/recordings":                s.listRecordings,
		"GET /v1/recordings/{id}":           s.getRecording,
		"GET /v1/cluster":                   s.cluster,
		"GET /v1/cluster/token":             s.clusterToken,
		"DELETE /v1/cluster/members/{id}":   s.removeMember,
		"GET /v1/backup":                    s.backupSave,
		"PUT /v1/backup":                    s.backupRestore,
		"GET /metrics": func(w http.ResponseWriter, r *http.Request, _ *caller) error {
			s.serveMetrics(w, r)
			return nil
		},
	}
}

// authed checks the API key, then runs h and reports its error.
func (s *Server) authed(route string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		c, err := s.login(w, r)
		if err == nil {
			err = idempotent(r, c)
		}
		if err == nil {
			err = h(w, r, c)
		}
		if err != nil {
			writeError(w, s.apiError(err))
		}
		s.observe(route, time.Since(start), err)
	})
}

var errUnauthorized = apiErr(http.StatusUnauthorized, api.CodeUnauthorized,
	"missing or malformed API key: send Authorization: Bearer mk_... (a new cluster's admin key is in its STATE/admin.key)")

// login authenticates r unless its address is backing off; a failure with a key is counted
// (and audited, rate-limited) against the address.
func (s *Server) login(w http.ResponseWriter, r *http.Request) (*caller, error) {
	if err := s.backOff(w, r); err != nil {
		return nil, err
	}
	c, err := s.authenticate(r)
	if e, ok := err.(*api.Error); ok && e.Status == http.StatusUnauthorized {
		if tok, ok := bearer(r); ok {
			k, _ := keys.Parse(tok, keys.APIKey)
			s.loginFailed(r, k.ID, err)
		}
	}
	return c, err
}

func (s *Server) authenticate(r *http.Request) (*caller, error) {
	tok, ok := bearer(r)
	if !ok {
		return nil, errUnauthorized
	}
	k, err := keys.Parse(tok, keys.APIKey)
	if err != nil {
		return nil, errUnauthorized
	}
	store, err := s.Backend.Read(r.Context(), api.Stale)
	if err != nil {
		return nil, err
	}
	rec := store.APIKey(k.ID)
	if rec == nil {
		// This replica may not have applied the key's making yet (it restarted, or lags the
		// leader): ask again as of the leader's commit before calling the key unknown, so a
		// good key is never counted as a failed login. No leader: unavailable, not unknown.
		if store, err = s.Backend.Read(r.Context(), api.Linearizable); err != nil {
			return nil, err
		}
		rec = store.APIKey(k.ID)
	}
	switch {
	case rec == nil || !k.Matches(rec.Hash):
		return nil, apiErr(http.StatusUnauthorized, api.CodeUnauthorized, "unknown API key")
	case rec.RevokedAt != nil:
		return nil, apiErr(http.StatusUnauthorized, api.CodeUnauthorized, "API key %s was revoked; create a new one", k.ID)
	case rec.ExpiresAt != nil && time.Now().After(*rec.ExpiresAt):
		return nil, apiErr(http.StatusUnauthorized, api.CodeUnauthorized, "API key %s expired at %s; create a new one", k.ID, rec.ExpiresAt.Format(time.RFC3339))
	}
	u := store.User(rec.UserID)
	if u == nil {
		return nil, apiErr(http.StatusUnauthorized, api.CodeUnauthorized, "API key %s belongs to a deleted user", k.ID)
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	return &caller{user: u, keyID: k.ID, addr: host}, nil
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) <= len(p) || h[:len(p)] != p {
		return "", false
	}
	return h[len(p):], true
}

// apiError maps state errors to HTTP answers.
func (s *Server) apiError(err error) error {
	var fe *fsm.Error
	if e, ok := err.(*fsm.Error); ok {
		fe = e
	}
	if fe == nil {
		if s.Logf != nil {
			if _, ok := err.(*api.Error); !ok {
				s.Logf("adminapi: %v", err)
			}
		}
		return err
	}
	status := map[string]int{
		fsm.CodeNotFound: http.StatusNotFound, fsm.CodeConflict: http.StatusConflict,
		fsm.CodeInvalid: http.StatusBadRequest, fsm.CodeUnsupported: http.StatusServiceUnavailable,
		fsm.CodeForbidden: http.StatusForbidden,
		fsm.CodeKeyReused: http.StatusUnprocessableEntity,
	}[fe.Code]
	code := map[string]string{
		fsm.CodeNotFound: api.CodeNotFound, fsm.CodeConflict: api.CodeConflict,
		fsm.CodeInvalid: api.CodeInvalid, fsm.CodeUnsupported: api.CodeUnavailable,
		fsm.CodeForbidden: api.CodeForbidden,
		fsm.CodeKeyReused: api.CodeKeyReused,
	}[fe.Code]
	if status == 0 {
		status, code = http.StatusInternalServerError, api.CodeInternal
	}
	return &api.Error{Status: status, Code: code, Message: fe.Msg}
}

// apply runs a command as the caller and decodes its value into out.
func (s *Server) apply(r *http.Request, c *caller, op string, data, out any) error {
	cmd, err := fsm.NewCommand(op, c.user.Name, c.addr, data)
	if err != nil {
		return err
	}
	cmd.IdemKey = c.idemKey()
	start := time.Now()
	res, err := s.Backend.Apply(r.Context(), cmd)
	s.observeApply(time.Since(start), err)
	if err != nil {
		return err
	}
	return res.Decode(out)
}

// read returns the state at the consistency the request asks for.
func (s *Server) read(r *http.Request) (*fsm.Store, error) {
	c := r.URL.Query().Get("consistency")
	switch c {
	case "", api.Stale, api.Default, api.Linearizable:
		return s.Backend.Read(r.Context(), c)
	}
	return nil, invalid("?consistency=%q: use stale, default or linearizable", c)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	st, err := s.Backend.Status()
	switch {
	case err != nil:
		writeError(w, err)
	case s.Backend.Unsupported():
		writeError(w, apiErr(http.StatusServiceUnavailable, api.CodeUnavailable, "replica stopped at a command it does not understand: upgrade it"))
	case st.Leader == "":
		writeError(w, apiErr(http.StatusServiceUnavailable, api.CodeUnavailable, "no leader"))
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "leader": st.Leader, "state": st.State})
	}
}

// maxWait bounds a blocking query.
const maxWait = 10 * time.Minute

// watchRead is read for listings that support blocking queries: with ?index=N it first waits
// (up to ?wait=DUR, default 5m) until table has changed after N. X-Meshwork-Index carries
// the index to pass next time; it is read before the listing, so no change slips between.
func (s *Server) watchRead(w http.ResponseWriter, r *http.Request, table string) (*fsm.Store, error) {
	store, err := s.read(r)
	if err != nil {
		return nil, err
	}
	if q := r.URL.Query().Get("index"); q != "" {
		after, err := strconv.ParseUint(q, 10, 64)
		if err != nil {
			return nil, invalid("?index=%q: want the X-Meshwork-Index of an earlier answer", q)
		}
		wait := 5 * time.Minute
		if q := r.URL.Query().Get("wait"); q != "" {
			if wait, err = time.ParseDuration(q); err != nil || wait <= 0 || wait > maxWait {
				return nil, invalid("?wait=%q: want a duration up to %v (30s, 5m)", q, maxWait)
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		store.WaitIndex(ctx, after, table)
		cancel()
	}
	w.Header().Set("X-Meshwork-Index", strconv.FormatUint(store.TableIndex(table), 10))
	return store, nil
}

func queryInt(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, invalid("?%s=%q: want a non-negative integer", name, v)
	}
	return n, nil
}
