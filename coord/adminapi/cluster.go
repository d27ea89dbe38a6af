package adminapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/policy"
)

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.watchRead(w, r, fsm.TableNodes)
	if err != nil {
		return err
	}
	out := []api.Node{}
	for _, n := range store.Nodes(visible(c)) {
		out = append(out, apiNode(store, n))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func apiNode(store *fsm.Store, n *fsm.Node) api.Node {
	return api.Node{ID: n.ID, Name: n.Name, User: userName(store, n.UserID), Tags: n.Tags,
		IPv4: n.IPv4, IPv6: n.IPv6, Online: n.Online, LastSeen: n.LastSeen, CreatedAt: n.CreatedAt}
}

// ownNode finds the named node if the caller may change it: admins any, members their own.
func (s *Server) ownNode(r *http.Request, c *caller) (*fsm.Store, *fsm.Node, error) {
	store, err := s.read(r)
	if err != nil {
		return nil, nil, err
	}
	n := store.Node(r.PathValue("name"))
	if n == nil || (!c.admin() && n.UserID != c.user.ID) {
		return nil, nil, notFound("no node %q", r.PathValue("name"))
	}
	return store, n, nil
}

func (s *Server) deleteNode(w http.ResponseWriter, r *http.Request, c *caller) error {
	_, n, err := s.ownNode(r, c)
	if err != nil {
		return err
	}
	if err := s.apply(r, c, "node.delete", fsm.ByName{Name: n.Name}, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.watchRead(w, r, fsm.TablePolicy)
	if err != nil {
		return err
	}
	p := store.Policy()
	writeJSON(w, http.StatusOK, api.Policy{Text: p.Text, Version: p.Version})
	return nil
}

func (s *Server) setPolicy(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := adminOnly(c, "changing the policy"); err != nil {
		return err
	}
	var req api.Policy
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if _, err := s.checkPolicy(r, req.Text); err != nil {
		return err
	}
	var p fsm.Policy
	if err := s.apply(r, c, "policy.set", fsm.Policy{Text: req.Text}, &p); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.Policy{Text: p.Text, Version: p.Version})
	return nil
}

// testPolicy checks a policy and runs its tests against the state, without setting it.
func (s *Server) testPolicy(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := adminOnly(c, "testing a policy"); err != nil {
		return err
	}
	var req api.Policy
	if err := decode(w, r, &req); err != nil {
		return err
	}
	p, err := s.checkPolicy(r, req.Text)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.PolicyTestResult{Tests: len(p.Tests)})
	return nil
}

// checkPolicy parses text and runs its tests against the state now; a failure is a 400
// naming the line or the failing test.
func (s *Server) checkPolicy(r *http.Request, text string) (*policy.Policy, error) {
	p, err := policy.Parse([]byte(text))
	if err != nil {
		return nil, invalid("%v", err)
	}
	if len(p.Tests) == 0 {
		return p, nil
	}
	if s.Policies == nil {
		return nil, invalid("policy: this coord cannot run the policy's tests: remove the tests section")
	}
	store, err := s.Backend.Read(r.Context(), api.Default)
	if err != nil {
		return nil, err
	}
	if err := s.Policies.Test(store, p); err != nil {
		return nil, invalid("%v; fix the policy or the test", err)
	}
	return p, nil
}

// explainPolicy says whether src may reach dst under the policy in force, and which acl
// allows it.
func (s *Server) explainPolicy(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := adminOnly(c, "explaining the policy"); err != nil {
		return err
	}
	var req api.PolicyExplainRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if s.Policies == nil {
		return invalid("policy explain: this coord cannot explain policies")
	}
	store, err := s.read(r)
	if err != nil {
		return err
	}
	var p *policy.Policy
	if text := store.Policy().Text; text != "" {
		if p, err = policy.Parse([]byte(text)); err != nil {
			return invalid("the policy in force does not parse (%v): set a fixed one", err)
		}
	}
	v, err := s.Policies.Explain(store, p, req.Src, req.Dst)
	if err != nil {
		return invalid("policy explain %s %s: %v", req.Src, req.Dst, err)
	}
	writeJSON(w, http.StatusOK, api.PolicyVerdict{Allowed: v.Allowed, Rule: v.Rule, Text: v.Text})
	return nil
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := adminOnly(c, "reading the audit log"); err != nil {
		return err
	}
	since, err := queryInt(r, "since", 0)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", 1000)
	if err != nil {
		return err
	}
	store, err := s.read(r)
	if err != nil {
		return err
	}
	out := []api.AuditEvent{}
	for _, e := range store.Audit(uint64(since), min(limit, 10000)) {
		out = append(out, api.AuditEvent{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Object: e.Object, Source: e.Source, Detail: e.Detail})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) cluster(w http.ResponseWriter, r *http.Request, c *caller) error {
	st, err := s.Backend.Status()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) clusterToken(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := adminOnly(c, "the join token"); err != nil {
		return err
	}
	tok, err := s.Backend.JoinToken()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": tok})
	return nil
}

func (s *Server) removeMember(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := adminOnly(c, "removing replicas"); err != nil {
		return err
	}
	if err := s.Backend.RemoveMember(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// join admits a new replica; the join token is its credential.
func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	if !s.joins.acquire() {
		writeError(w, apiErr(http.StatusTooManyRequests, api.CodeUnavailable, "too many joins at once; retry in a moment"))
		return
	}
	defer s.joins.release()
	if r.TLS == nil && !s.InsecureJoin && !loopback(r.RemoteAddr) {
		writeError(w, forbidden("a join over plain HTTP from %s is refused: the answer carries the cluster's CA key. "+
			"Serve this admin API over TLS (--tls-cert/--tls-key) and join with https://, or start the replicas with --insecure-join on a lab", r.RemoteAddr))
		return
	}
	var req api.JoinRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	resp, err := s.Backend.Admit(req)
	if err != nil {
		writeError(w, s.apiError(err))
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// loopback reports whether a request's remote address is this machine's loopback.
func loopback(remoteAddr string) bool {
	host, _, _ := net.SplitHostPort(remoteAddr)
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func (s *Server) backupSave(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := adminOnly(c, "backups"); err != nil {
		return err
	}
	store, err := s.Backend.Read(r.Context(), api.Linearizable)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	return store.WriteSnapshot(w)
}

// maxBackup bounds a restored backup.
const maxBackup = 256 << 20

// restorer is a Backend that replaces the whole state with a backup's: checked as the ops
// check what they create, then installed on every replica at once (the replica's does it
// through Raft's snapshot install: no log entry could carry a large state).
type restorer interface {
	Restore(ctx context.Context, actor, source string, backup []byte) error
}

func (s *Server) backupRestore(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := adminOnly(c, "restoring backups"); err != nil {
		return err
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBackup))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return apiErr(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "backup over %d bytes", maxBackup)
	}
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(b, []byte("{")) {
		return invalid("not a Meshwork backup: make one with meshctl backup save")
	}
	rs, ok := s.Backend.(restorer)
	if !ok {
		return apiErr(http.StatusNotImplemented, api.CodeUnavailable, "this coord cannot restore backups")
	}
	if err := rs.Restore(r.Context(), c.user.Name, c.addr, b); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "restored"})
	return nil
}
