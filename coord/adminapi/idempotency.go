package adminapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"hash"
	"io"
	"net/http"
	"strings"
	"sync"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
)

// maxIdemKey bounds an Idempotency-Key, as Stripe's 255 characters do.
const maxIdemKey = 255

// bodyDigest hashes a request's body as the handler reads it, so a retry with an
// Idempotency-Key can be told from another request sent with the same key.
type bodyDigest struct {
	io.ReadCloser
	once sync.Once
	h    hash.Hash
	sum  string
}

func (d *bodyDigest) Read(p []byte) (int, error) {
	n, err := d.ReadCloser.Read(p)
	d.h.Write(p[:n])
	return n, err
}

// digest reads what the handler left of the body (bounded) and returns the hash of it all.
func (d *bodyDigest) digest() string {
	d.once.Do(func() {
		io.Copy(io.Discard, io.LimitReader(d, maxBody))
		d.sum = hex.EncodeToString(d.h.Sum(nil))
	})
	return d.sum
}

// idempotent checks a request's Idempotency-Key and, when it has one, starts hashing its
// body; c.idem is then the key's scope: the caller, the method and the path, so nobody
// else's request with the same key ever meets this one's answer.
func idempotent(r *http.Request, c *caller) error {
	k := r.Header.Get("Idempotency-Key")
	if k == "" {
		return nil
	}
	if len(k) > maxIdemKey {
		return invalid("Idempotency-Key of %d bytes: use at most %d (a UUID is 36)", len(k), maxIdemKey)
	}
	h := sha256.New()
	for _, s := range []string{c.user.ID, r.Method, r.URL.Path, k} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	c.idem = hex.EncodeToString(h.Sum(nil))
	c.body = &bodyDigest{ReadCloser: r.Body, h: sha256.New()}
	r.Body = c.body
	return nil
}

// idemKey is the FSM's idempotency key of the request: its scope and its body's digest.
func (c *caller) idemKey() string {
	if c.idem == "" {
		return ""
	}
	return fsm.IdemKey(c.idem, c.body.digest())
}

var keyEnc = base32.StdEncoding.WithPadding(base32.NoPadding)

// newKey makes the secret a create of an API or auth key hands out. With an
// Idempotency-Key it is derived from the cluster's secret key and the request's idempotency
// key, so a retry hands out the same working key (and only to the same caller, whose ID is
// in the scope) while no secret is ever stored.
func (s *Server) newKey(c *caller, prefix string) (keys.Key, error) {
	if c.idem == "" {
		return keys.New(prefix), nil
	}
	if s.Secrets == nil {
		return keys.Key{}, apiErr(http.StatusServiceUnavailable, api.CodeUnavailable,
			"coord has no secret key to make a key that a retry can hand out again: start it with --secret-key-file, or send no Idempotency-Key")
	}
	m := hmac.New(sha256.New, s.Secrets[:])
	m.Write([]byte("meshwork idempotent key v1\x00" + prefix + "\x00" + c.idemKey()))
	sum := m.Sum(nil)
	lower := func(b []byte) string { return strings.ToLower(keyEnc.EncodeToString(b)) }
	return keys.Key{Prefix: prefix, ID: lower(sum[:5]), Secret: lower(sum[5:25])}, nil
}
