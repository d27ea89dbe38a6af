package sshd

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"path/filepath"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

func TestAgentForwarding(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	h := newHarness(t, func(c *Config) {
		c.AgentListen = func(ctx context.Context, ws string) (net.Listener, string, error) {
			ln, err := net.Listen("unix", sock)
			return ln, sock, err
		}
	})
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv, Comment: "laptop key"}); err != nil {
		t.Fatal(err)
	}
	c := h.client("dev")
	if err := agent.ForwardToAgent(c, keyring); err != nil {
		t.Fatal(err)
	}
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.RequestAgentForwarding(sess); err != nil {
		t.Fatal(err)
	}
	out, err := sess.CombinedOutput("ssh-add -l")
	if err != nil {
		t.Fatalf("ssh-add -l: %v: %s", err, out)
	}
	signer, _ := gossh.NewSignerFromKey(priv)
	if fp := gossh.FingerprintSHA256(signer.PublicKey()); !strings.Contains(string(out), fp) {
		t.Errorf("ssh-add -l in the session: %q, want the laptop's key %s", out, fp)
	}
	if sp := h.exec.last(); !strings.Contains(strings.Join(sp.Env, " "), "SSH_AUTH_SOCK="+sock) {
		t.Errorf("env %q: no SSH_AUTH_SOCK", sp.Env)
	}
}

func TestAgentForwardingRefusedWithoutHook(t *testing.T) {
	sess, err := newHarness(t, nil).client("dev").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.RequestAgentForwarding(sess); err == nil {
		t.Errorf("agent forwarding accepted without Config.AgentListen")
	}
}
