package sshd

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	gossh "golang.org/x/crypto/ssh"
)

// hostKeys holds one ed25519 host key per workspace, on disk when dir is set.
type hostKeys struct {
	dir string

	mu      sync.Mutex
	signers map[string]gossh.Signer // by workspace; guarded by mu
}

func newHostKeys(dir string) *hostKeys {
	return &hostKeys{dir: dir, signers: map[string]gossh.Signer{}}
}

// signer returns workspace's host key, loading or making it.
func (k *hostKeys) signer(workspace string) (gossh.Signer, error) {
	if err := checkName(workspace); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if s := k.signers[workspace]; s != nil {
		return s, nil
	}
	s, err := k.load(workspace)
	if err != nil {
		return nil, fmt.Errorf("sshd: host key for %q: %w", workspace, err)
	}
	k.signers[workspace] = s
	return s, nil
}

// load reads dir/<workspace>.key, making it first if it does not exist.
func (k *hostKeys) load(workspace string) (gossh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if k.dir == "" {
		return gossh.NewSignerFromKey(priv)
	}
	path := filepath.Join(k.dir, workspace+".key")
	pemBytes, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		pemBytes, err = writeKey(path, priv)
	}
	if err != nil {
		return nil, err
	}
	return gossh.ParsePrivateKey(pemBytes)
}

// writeKey writes priv to path unless another process got there first, and returns what path
// then holds. The key is written to a temporary file and linked into place, so path is never
// seen half-written.
func writeKey(path string, priv ed25519.PrivateKey) ([]byte, error) {
	block, err := gossh.MarshalPrivateKey(priv, "meshwork workspace host key")
	if err != nil {
		return nil, err
	}
	data := pem.EncodeToMemory(block)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".hostkey-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	return os.ReadFile(path)
}

// checkName refuses workspace names that could escape a directory or break a file name.
func checkName(name string) error {
	if name == "" || len(name) > 128 || name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("sshd: bad workspace name %q", name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return fmt.Errorf("sshd: bad workspace name %q", name)
		}
	}
	return nil
}
