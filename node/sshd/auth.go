package sshd

import (
	"fmt"
	"sync"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// auth decides who may log in to one workspace. The mesh identity is the credential: every
// method ("none", any public key, keyboard-interactive without questions) succeeds exactly when
// WhoIs knows the caller and Allow lets them in as the requested login.
type auth struct {
	s         *Server
	workspace string
}

// ctxKey keys per-connection values in the gliderlabs context.
type ctxKey string

const (
	keyIdentity ctxKey = "meshwork-identity" // Identity, once authenticated
)

// verdicts caches the decision per login for one connection, so a client trying several keys
// costs one WhoIs and counts as one failure.
type verdicts struct {
	mu      sync.Mutex
	byLogin map[string]error // guarded by mu
	counted bool             // a failure of this connection reached the shield; guarded by mu
}

func (a *auth) serverConfig(ctx gliderssh.Context) *gossh.ServerConfig {
	v := &verdicts{byLogin: map[string]error{}}
	ok := func(cm gossh.ConnMetadata) (*gossh.Permissions, error) {
		if err := a.check(ctx, v, cm); err != nil {
			return nil, err
		}
		return &gossh.Permissions{}, nil
	}
	return &gossh.ServerConfig{
		NoClientAuth:         true,
		NoClientAuthCallback: ok,
		PublicKeyCallback: func(cm gossh.ConnMetadata, _ gossh.PublicKey) (*gossh.Permissions, error) {
			return ok(cm)
		},
		KeyboardInteractiveCallback: func(cm gossh.ConnMetadata, _ gossh.KeyboardInteractiveChallenge) (*gossh.Permissions, error) {
			return ok(cm)
		},
	}
}

// check returns nil when the caller at cm may log in as cm.User().
func (a *auth) check(ctx gliderssh.Context, v *verdicts, cm gossh.ConnMetadata) error {
	login := cm.User()
	v.mu.Lock()
	defer v.mu.Unlock()
	if err, ok := v.byLogin[login]; ok {
		return err
	}
	id, err := a.decide(ctx, cm)
	v.byLogin[login] = err
	if err == nil {
		ctx.SetValue(keyIdentity, id)
		return nil
	}
	remote := addrPort(cm.RemoteAddr())
	f := AuthFailure{Addr: remote, Identity: id, Workspace: a.workspace, Login: login, Reason: err.Error()}
	if !v.counted {
		v.counted = true
		f.Blocked = a.s.shield.fail(remote.Addr())
	}
	a.s.c.Logf("sshd: %s: refused %q as %s from %v: %v", a.workspace, id.User, login, remote, err)
	if a.s.c.OnAuthFailure != nil {
		a.s.c.OnAuthFailure(f)
	}
	return err
}

// decide asks WhoIs and Allow.
func (a *auth) decide(ctx gliderssh.Context, cm gossh.ConnMetadata) (Identity, error) {
	remote := addrPort(cm.RemoteAddr())
	id, err := a.s.c.WhoIs(ctx, remote)
	if err != nil {
		return Identity{Addr: remote}, fmt.Errorf("whois %v: %w", remote, err)
	}
	id.Addr = remote
	if err := a.s.c.Allow(id, a.workspace, cm.User()); err != nil {
		return id, err
	}
	return id, nil
}

// identityOf returns the identity an authenticated connection logged in with.
func identityOf(ctx gliderssh.Context) Identity {
	id, _ := ctx.Value(keyIdentity).(Identity)
	return id
}
