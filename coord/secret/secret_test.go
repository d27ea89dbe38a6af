package secret

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newKey(t testing.TB) Key {
	var k Key
	rand.Read(k[:])
	return k
}

func TestSealOpen(t *testing.T) {
	k, other := newKey(t), newKey(t)
	sealed := k.Seal([]byte("hunter2"), []byte("env/staging"))
	if bytes.Contains(sealed, []byte("hunter2")) {
		t.Fatalf("plaintext visible in the sealed value")
	}
	if got, err := k.Open(sealed, []byte("env/staging")); err != nil || string(got) != "hunter2" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := other.Open(sealed, []byte("env/staging")); err == nil {
		t.Errorf("opened with the wrong key")
	}
	if _, err := k.Open(sealed, []byte("env/prod")); err == nil {
		t.Errorf("opened as another record")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := k.Open(sealed, []byte("env/staging")); err == nil {
		t.Errorf("opened tampered data")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t)
	good := filepath.Join(dir, "key")
	os.WriteFile(good, []byte(base64.StdEncoding.EncodeToString(k[:])+"\n"), 0o600)
	if got, err := Load(good); err != nil || got != k {
		t.Fatalf("Load = %v", err)
	}
	open := filepath.Join(dir, "open")
	os.WriteFile(open, []byte(base64.StdEncoding.EncodeToString(k[:])), 0o644)
	if _, err := Load(open); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key accepted: %v", err)
	}
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abcd"), 0o600)
	if _, err := Load(short); err == nil || !strings.Contains(err.Error(), "head -c32") {
		t.Errorf("short key: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "head -c32") {
		t.Errorf("missing key: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	var k Key
	f.Add(k.Seal([]byte("x"), nil))
	f.Fuzz(func(t *testing.T, b []byte) { k.Open(b, nil) })
}
