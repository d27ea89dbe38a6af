package ctrd_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/wsexec"
)

// TestSetSearch connects a running workspace to an environment and back: its resolv.conf,
// read inside, changes at once, with the nameserver kept.
func TestSetSearch(t *testing.T) {
	e := newSvcEnv(t)
	s := spec("alice", 50)
	t.Cleanup(func() {
		if err := e.host.Do(func() error { return e.rt.Delete(context.Background(), s.Name) }); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := e.host.Do(func() error { _, err := e.rt.Run(e.ctx(), s, nil); return err }); err != nil {
		t.Fatal(err)
	}
	resolv := func() string {
		t.Helper()
		var out bytes.Buffer
		p, err := e.rt.Exec(e.ctx(), s.Name, wsexec.Spec{Args: []string{"cat", "/etc/resolv.conf"}, Stdout: &out})
		if err != nil {
			t.Fatal(err)
		}
		if code, err := p.Wait(); code != 0 || err != nil {
			t.Fatalf("cat: %d, %v", code, err)
		}
		return out.String()
	}
	if got, want := resolv(), "nameserver 100.100.100.100\nsearch mesh.internal\n"; got != want {
		t.Fatalf("before: %q, want %q", got, want)
	}
	connect := []string{"shop.mesh.internal", "mesh.internal"}
	if err := e.rt.SetSearch(e.ctx(), s.Name, connect); err != nil {
		t.Fatal(err)
	}
	if got, want := resolv(), "nameserver 100.100.100.100\nsearch shop.mesh.internal mesh.internal\n"; got != want {
		t.Errorf("after connect: %q, want %q", got, want)
	}
	if err := e.rt.SetSearch(e.ctx(), s.Name, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := resolv(), "nameserver 100.100.100.100\n"; got != want {
		t.Errorf("with no search: %q, want %q", got, want)
	}
	if err := e.rt.SetSearch(e.ctx(), s.Name, []string{"a b"}); err == nil {
		t.Error("a domain with a space was taken")
	}
	if err := e.rt.SetSearch(e.ctx(), "nosuch", connect); !errors.Is(err, ctrd.ErrNotFound) {
		t.Errorf("unknown workspace: %v, want ErrNotFound", err)
	}
}
