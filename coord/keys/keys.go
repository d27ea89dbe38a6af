// Package keys makes and checks the secrets coord hands out: API keys (mk_…), auth keys for
// machines (ak_…) and the cluster join token (mj_…). Only hashes of key secrets are stored.
package keys

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"strings"
)

// Prefixes of the kinds of keys.
const (
	APIKey    = "mk"
	AuthKey   = "ak"
	JoinToken = "mj"
)

var enc = base32.StdEncoding.WithPadding(base32.NoPadding)

// A Key is a parsed key: "PREFIX_ID_SECRET". The ID finds the stored record; the secret is
// checked against the record's hash.
type Key struct {
	Prefix string
	ID     string
	Secret string
}

// String is the key as users hold it.
func (k Key) String() string { return k.Prefix + "_" + k.ID + "_" + k.Secret }

// Hash is what is stored of the key: the SHA-256 of its secret, hex.
func (k Key) Hash() string { return Hash(k.Secret) }

// Hash returns the stored form of a secret.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// New makes a random key with the given prefix.
func New(prefix string) Key {
	return Key{Prefix: prefix, ID: random(5), Secret: random(20)}
}

func random(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return strings.ToLower(enc.EncodeToString(b))
}

// ErrMalformed is returned by Parse for a string that is not a key of the wanted kind.
var ErrMalformed = errors.New("malformed key")

// Parse splits s into a key, checking its prefix.
func Parse(s, prefix string) (Key, error) {
	parts := strings.Split(s, "_")
	if len(parts) != 3 || parts[0] != prefix || parts[1] == "" || parts[2] == "" {
		return Key{}, ErrMalformed
	}
	return Key{Prefix: parts[0], ID: parts[1], Secret: parts[2]}, nil
}

// Matches reports, in constant time, whether k's secret hashes to hash.
func (k Key) Matches(hash string) bool {
	return hmac.Equal([]byte(k.Hash()), []byte(hash))
}

// Token derives the cluster's join token from the cluster CA's private key (DER): every replica
// holds the CA, so any of them can check a token without storing it.
func Token(caKey []byte) string {
	m := hmac.New(sha256.New, caKey)
	m.Write([]byte("meshwork join token v1"))
	return JoinToken + "_" + strings.ToLower(enc.EncodeToString(m.Sum(nil)[:20]))
}

// CheckToken reports, in constant time, whether tok is the cluster's join token.
func CheckToken(caKey []byte, tok string) bool {
	return hmac.Equal([]byte(Token(caKey)), []byte(tok))
}
