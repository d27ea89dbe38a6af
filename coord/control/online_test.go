package control

import (
	"testing"
	"time"

	"meshwork.dev/coord/fsm"
)

// TestOnlineDoesNotFlap: a node whose stream closes and opens again within the grace (a
// client does so when its prefs change) is never written offline; one that stays away is.
func TestOnlineDoesNotFlap(t *testing.T) {
	l := &local{f: fsm.New(t.Logf)}
	l.must(t, "cluster.init", fsm.ClusterInit{ULA: "fd00:1:2::/48"})
	l.must(t, "user.create", fsm.User{ID: "u", Name: "u", Role: fsm.RoleAdmin})
	l.must(t, "node.register", fsm.Node{ID: "n1", Name: "wm", UserID: "u", NodeKey: "nodekey:1"})
	s := &Server{Backend: l, Stream: "c1/boot", OfflineGrace: 300 * time.Millisecond}
	defer s.Close()
	node := func() *fsm.Node { return l.f.Store().Node("wm") }
	wait := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("not within 5 s: %s", what)
			}
		}
	}
	s.streamOpened("n1")
	wait("online", func() bool { return node().Online })
	writes := node().ModifyIndex
	s.streamClosed(node())
	time.Sleep(100 * time.Millisecond)
	s.streamOpened("n1") // back within the grace
	time.Sleep(600 * time.Millisecond)
	if n := node(); !n.Online || n.ModifyIndex != writes {
		t.Errorf("a reconnect within the grace was written (online %v, index %d → %d)", n.Online, writes, n.ModifyIndex)
	}
	s.streamClosed(node())
	wait("offline after the grace", func() bool { return !node().Online })
}
