package replica

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/keys"
	"meshwork.dev/coord/peer"
)

func (r *Replica) tlsDir() string { return filepath.Join(r.cfg.StateDir, "tls") }

// identity loads the replica's cluster identity, or makes one: a new cluster's, or one
// issued by a member when joining.
func (r *Replica) identity(ctx context.Context, hasState bool) error {
	id, err := peer.Load(r.tlsDir())
	switch {
	case err == nil && (hasState || r.cfg.Join == ""):
		r.id = id
		return nil
	case err == nil:
		// Identity but no Raft state: a join that did not finish. Ask again.
		if r.id, err = r.requestIdentity(ctx); err != nil {
			return err
		}
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("replica: TLS identity in %s: %w", r.tlsDir(), err)
	case hasState:
		return fmt.Errorf("replica: %s has Raft state but no TLS identity in %s; restore the directory or start empty and join", r.cfg.StateDir, r.tlsDir())
	case r.cfg.Join == "":
		if r.id, err = peer.NewCluster(r.cfg.ID); err != nil {
			return err
		}
	default:
		if r.id, err = r.requestIdentity(ctx); err != nil {
			return err
		}
	}
	return r.id.Save(r.tlsDir())
}

// Identity is the replica's place in the cluster: CA, certificate, ID.
func (r *Replica) Identity() *peer.Identity { return r.id }

// ClusterSeed is unique to the cluster and the same on every replica: its CA certificate.
func (r *Replica) ClusterSeed() []byte { return r.id.CA.Raw }

// ClusterSecret is secret, unique to the cluster and the same on every replica: the CA key.
func (r *Replica) ClusterSecret() []byte { return r.id.CAKeyDER() }

// JoinToken is the token new replicas join this cluster with.
func (r *Replica) JoinToken() string { return keys.Token(r.id.CAKeyDER()) }

// requestIdentity asks the member at Join for a certificate, retrying while it is not up
// yet (replicas of a new cluster start together).
func (r *Replica) requestIdentity(ctx context.Context) (*peer.Identity, error) {
	key, err := peer.NewKey()
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	req := api.JoinRequest{Token: r.cfg.JoinToken, ID: r.cfg.ID, ClusterAddr: r.cfg.ClusterAddr, HTTPAddr: r.cfg.HTTPAddr, PublicKey: pub}
	var resp api.JoinResponse
	err = retry(ctx, 60*time.Second, r.cfg.Logf, func() error {
		return postJSON(ctx, strings.TrimSuffix(r.cfg.Join, "/")+"/v1/cluster/join", req, &resp)
	})
	if err != nil {
		return nil, fmt.Errorf("replica: joining through %s: %w", r.cfg.Join, err)
	}
	r.joinPeers = resp.Peers
	return fromJoin(resp, key)
}

func fromJoin(resp api.JoinResponse, key *ecdsa.PrivateKey) (*peer.Identity, error) {
	id, err := peer.FromPEM(resp.CACert, resp.CAKey, resp.NodeCert, key)
	if err != nil {
		return nil, fmt.Errorf("replica: the member's answer: %w", err)
	}
	return id, nil
}

// askToJoin asks a member, over the now-authenticated cluster port, to add this replica as
// a voter. Raft must be running: the new configuration commits only with this replica's vote.
func (r *Replica) askToJoin(ctx context.Context) error {
	if len(r.joinPeers) == 0 {
		return errors.New("replica: the member named no peers to join through")
	}
	body, _ := json.Marshal(addVoter{ID: r.cfg.ID, Addr: r.cfg.ClusterAddr})
	return retry(ctx, 60*time.Second, r.cfg.Logf, func() error {
		var last error
		for _, p := range r.joinPeers {
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			_, err := r.tr.Call(cctx, p, methodAddVoter, body)
			cancel()
			if err == nil {
				r.cfg.Logf("replica %s: joined the cluster through %s", r.cfg.ID, p)
				return nil
			}
			last = err
		}
		return last
	})
}

// Admit answers a joining replica (called by the admin API on any member): it checks the
// join token and issues the replica's certificate. The replica then asks to become a voter
// over the cluster port.
func (r *Replica) Admit(req api.JoinRequest) (*api.JoinResponse, error) {
	if !keys.CheckToken(r.id.CAKeyDER(), req.Token) {
		return nil, ErrBadToken
	}
	if req.ID == "" || req.ClusterAddr == "" {
		return nil, errors.New("join: id and cluster_addr are required")
	}
	cert, err := r.id.Issue(req.ID, req.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	caPEM, caKeyPEM := r.id.PEM()
	resp := &api.JoinResponse{CACert: caPEM, CAKey: caKeyPEM, NodeCert: cert}
	if st, err := r.Status(); err == nil {
		for _, m := range st.Members {
			resp.Peers = append(resp.Peers, m.Address)
		}
	}
	return resp, nil
}

// ErrBadToken refuses a join with a wrong token.
var ErrBadToken = errors.New("wrong join token: print the cluster's with 'meshctl cluster token' on a member")

// retry calls f until it succeeds, ctx ends or limit passes, backing off up to 2 s.
func retry(ctx context.Context, limit time.Duration, logf func(string, ...any), f func() error) error {
	deadline := time.Now().Add(limit)
	wait := 100 * time.Millisecond
	for {
		err := f()
		var perm *permanentError
		if err == nil || errors.As(err, &perm) || time.Now().After(deadline) {
			return err
		}
		logf("replica: %v; retrying in %v", err, wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// permanentError is a failure retrying cannot fix (a wrong token).
type permanentError struct{ error }

func (e *permanentError) Unwrap() error { return e.error }

func postJSON(ctx context.Context, url string, in, out any) error {
	b, _ := json.Marshal(in)
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(b))
	if err != nil {
		return &permanentError{err}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error api.Error }
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
			msg = e.Error.Message
		}
		err := fmt.Errorf("%s: %s", resp.Status, msg)
		if resp.StatusCode < 500 {
			return &permanentError{err}
		}
		return err
	}
	return json.Unmarshal(body, out)
}
