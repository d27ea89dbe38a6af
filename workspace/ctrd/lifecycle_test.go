package ctrd_test

import (
	"testing"
)

func TestRunGreets(t *testing.T) {
	e := newEnv(t)
	s := spec("alice", 7)
	st := e.run(s)
	t.Logf("running: %+v", st)
	if got, want := e.hello(s.IPv4), "hello from "+s.Name; got != want {
		t.Errorf("greeting %q, want %q", got, want)
	}
	if got, want := e.hello(s.IPv6), "hello from "+s.Name; got != want {
		t.Errorf("greeting over IPv6 %q, want %q", got, want)
	}
}
