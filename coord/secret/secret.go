// Package secret seals secrets at rest with AES-256-GCM under a key that lives outside the
// state directory (a file or the environment), so a copy of the data alone reveals nothing.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Key is a 256-bit sealing key.
type Key [32]byte

// version prefixes every sealed value, so the format can change later.
const version = 1

// howToMake tells a user how to make a key.
const howToMake = "make one with: head -c32 /dev/urandom | base64 > FILE"

// Parse reads a key written as base64 or hex (surrounding space ignored).
func Parse(s string) (Key, error) {
	s = strings.TrimSpace(s)
	var k Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(k) {
		if b, err = hex.DecodeString(s); err != nil || len(b) != len(k) {
			return k, fmt.Errorf("want 32 bytes as base64 or hex; %s", howToMake)
		}
	}
	copy(k[:], b)
	return k, nil
}

// Load reads a key from a file, which must not be readable by others.
func Load(path string) (Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Key{}, fmt.Errorf("secret key: %w (%s)", err, howToMake)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return Key{}, fmt.Errorf("secret key %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("secret key: %w", err)
	}
	k, err := Parse(string(b))
	if err != nil {
		return Key{}, fmt.Errorf("secret key %s: %w", path, err)
	}
	return k, nil
}

func (k *Key) aead() cipher.AEAD {
	block, err := aes.NewCipher(k[:])
	if err != nil {
		panic(err) // a 32-byte key always makes a cipher
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return g
}

// Seal encrypts plaintext; aad (not secret, e.g. the record's name) is bound to it, so a
// sealed value cannot be moved to another record.
func (k *Key) Seal(plaintext, aad []byte) []byte {
	g := k.aead()
	out := make([]byte, 1+g.NonceSize(), 1+g.NonceSize()+len(plaintext)+g.Overhead())
	out[0] = version
	rand.Read(out[1:])
	return g.Seal(out, out[1:1+g.NonceSize()], plaintext, aad)
}

// ErrOpen is returned for a sealed value that the key and aad do not open.
var ErrOpen = errors.New("secret: cannot decrypt: wrong key, tampered data or wrong record")

// Open decrypts a value made by Seal with the same key and aad.
func (k *Key) Open(sealed, aad []byte) ([]byte, error) {
	g := k.aead()
	if len(sealed) < 1+g.NonceSize()+g.Overhead() || sealed[0] != version {
		return nil, ErrOpen
	}
	pt, err := g.Open(nil, sealed[1:1+g.NonceSize()], sealed[1+g.NonceSize():], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// RecordingAAD binds a sealed session recording to its session.
func RecordingAAD(sessionID string) string { return "recording/" + sessionID }

// ComposeAAD binds an environment's sealed compose file to the environment.
func ComposeAAD(env string) string { return "environment/" + env + "/compose" }

// VariablesAAD binds an environment's sealed variables to the environment.
func VariablesAAD(env string) string { return "environment/" + env + "/variables" }

// ExitKeyAAD binds an exit's sealed WireGuard private key to the exit.
func ExitKeyAAD(exit string) string { return "exit/" + exit + "/private-key" }
