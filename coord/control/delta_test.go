package control

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"tailscale.com/tailcfg"

	"meshwork.dev/coord/fsm"
)

// local applies commands straight to an FSM.
type local struct {
	f     *fsm.FSM
	index uint64
}

func (l *local) Apply(ctx context.Context, c *fsm.Command) (*fsm.Result, error) {
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	l.index++
	return l.f.Apply(&raft.Log{Index: l.index, Type: raft.LogCommand, Data: data}).(*fsm.Result), nil
}

func (l *local) Read(context.Context, string) (*fsm.Store, error) { return l.f.Store(), nil }

func (l *local) must(t *testing.T, op string, data any) {
	t.Helper()
	c, _ := fsm.NewCommand(op, "test", "", data)
	res, _ := l.Apply(context.Background(), c)
	if res.Err != nil {
		t.Fatalf("%s: %v", op, res.Err)
	}
}

// TestDeltaIsTheChange: with 200 nodes, one node's new endpoints reach a stream as that one
// changed peer, and a deletion as one removal — not as a new map of everyone.
func TestDeltaIsTheChange(t *testing.T) {
	l := &local{f: fsm.New(t.Logf)}
	l.must(t, "cluster.init", fsm.ClusterInit{ULA: "fd00:1:2::/48"})
	l.must(t, "user.create", fsm.User{ID: "u", Name: "u", Role: fsm.RoleAdmin})
	l.must(t, "authkey.create", fsm.AuthKey{ID: "k", UserID: "u", Hash: "h", Reusable: true})
	for i := range 200 {
		l.must(t, "node.join", fsm.Join{ID: fmt.Sprint("n", i), Hostname: fmt.Sprint("n", i),
			MachineKey: fmt.Sprint("mkey:", i), NodeKey: fmt.Sprint("nodekey:", i), AuthKeyID: "k"})
	}
	s := &Server{Backend: l}
	store := l.f.Store()
	var st streamState
	if full := s.mapResponse(store, "nodekey:0", &st); len(full.Peers) != 199 {
		t.Fatalf("full map has %d peers, want 199", len(full.Peers))
	}

	l.must(t, "node.update", fsm.NodeUpdate{NodeKey: "nodekey:7", Endpoints: []string{"198.18.0.7:41641"}})
	res, ok := s.delta(store, "n0", &st)
	if !ok || res == nil || len(res.PeersChanged) != 1 || res.PeersChanged[0].Name != "n7.mesh.internal." || res.Peers != nil {
		t.Fatalf("delta after one update = %+v; want just n7", res)
	}
	if res, _ := s.delta(store, "n0", &st); res != nil {
		t.Errorf("a second delta with nothing new = %+v; want none", res)
	}
	l.must(t, "node.delete", fsm.ByName{Name: "n9"})
	res, _ = s.delta(store, "n0", &st)
	if res == nil || len(res.PeersRemoved) != 1 || res.PeersRemoved[0] != nodeID("n9") || len(res.PeersChanged) != 0 {
		t.Errorf("delta after a delete = %+v; want n9 removed", res)
	}
	l.must(t, "node.delete", fsm.ByName{Name: "n0"})
	if _, ok := s.delta(store, "n0", &st); ok {
		t.Errorf("the stream of a deleted node goes on")
	}
}

// TestFilterCompiledOncePerChange: every stream gets the one filter compiled for the current
// policy and nodes; a new node named by the policy makes a new one that includes it.
func TestFilterCompiledOncePerChange(t *testing.T) {
	l := &local{f: fsm.New(t.Logf)}
	l.must(t, "cluster.init", fsm.ClusterInit{ULA: "fd00:1:2::/48"})
	l.must(t, "user.create", fsm.User{ID: "u", Name: "u", Role: fsm.RoleAdmin})
	l.must(t, "authkey.create", fsm.AuthKey{ID: "k", UserID: "u", Hash: "h", Reusable: true})
	join := func(i int) {
		l.must(t, "node.join", fsm.Join{ID: fmt.Sprint("n", i), Hostname: fmt.Sprint("n", i),
			MachineKey: fmt.Sprint("mkey:", i), NodeKey: fmt.Sprint("nodekey:", i), AuthKeyID: "k"})
	}
	join(0)
	l.must(t, "policy.set", fsm.Policy{Text: `{"acls": [{"action": "accept", "src": ["n0"], "dst": ["n0:22", "n1:22"]}]}`})
	s := &Server{Backend: l}
	store := l.f.Store()
	first, gen := s.filter(store, nil)
	if len(first) != 1 {
		t.Fatalf("filter = %+v, want one rule", first)
	}
	if again, g := s.filter(store, nil); &again[0] != &first[0] || g != gen {
		t.Errorf("the filter was compiled again with nothing changed")
	}
	join(1)
	if after, g := s.filter(store, nil); len(after) != 1 || len(after[0].DstPorts) <= len(first[0].DstPorts) || g == gen {
		t.Errorf("before n1 joined: %+v; after: %+v (generation %d, %d); want n1's addresses added, a new generation", first, after, gen, g)
	}
}

// TestMapsTrimmedByPolicy: under a policy a node hears only of the peers it may reach or be
// reached from (and their users), as Tailscale trims maps; a policy change adds and removes
// peers in the next delta; with no policy everyone sees everyone.
func TestMapsTrimmedByPolicy(t *testing.T) {
	l := &local{f: fsm.New(t.Logf)}
	l.must(t, "cluster.init", fsm.ClusterInit{ULA: "fd00:1:2::/48"})
	for _, u := range []fsm.User{{ID: "u-root", Name: "root", Role: fsm.RoleAdmin}, {ID: "u-a", Name: "alice", Role: fsm.RoleMember}, {ID: "u-b", Name: "bob", Role: fsm.RoleMember}} {
		l.must(t, "user.create", u)
	}
	join := func(name, user string, tags ...string) {
		l.must(t, "node.register", fsm.Node{ID: name, Name: name, UserID: user, Tags: tags, NodeKey: "nodekey:" + name})
	}
	join("a1", "u-a")
	join("b1", "u-b")
	join("srv", "u-root", "tag:server")
	s := &Server{Backend: l}
	store := l.f.Store()
	peers := func(res []*tailcfg.Node) string {
		var names []string
		for _, p := range res {
			names = append(names, p.Hostinfo.Hostname())
		}
		sort.Strings(names)
		return strings.Join(names, ",")
	}
	streams := map[string]*streamState{}
	full := func(name string) *tailcfg.MapResponse {
		streams[name] = &streamState{}
		return s.mapResponse(store, "nodekey:"+name, streams[name])
	}
	if got := peers(full("a1").Peers); got != "b1,srv" {
		t.Errorf("no policy: a1's peers %q; want everyone", got)
	}
	early := streams["a1"] // a stream that began before any policy

	l.must(t, "policy.set", fsm.Policy{Text: `{"acls": [{"action": "accept", "src": ["alice"], "dst": ["tag:server:*"]}]}`})
	for name, want := range map[string]string{"a1": "srv", "b1": "", "srv": "a1"} {
		res := full(name)
		if got := peers(res.Peers); got != want {
			t.Errorf("alice → tag:server: %s's peers %q; want %q", name, got, want)
		}
		if name != "b1" {
			for _, u := range res.UserProfiles {
				if u.LoginName == "bob" {
					t.Errorf("%s learns of bob, whose machines it may not reach", name)
				}
			}
		}
	}
	// The stream from before the policy loses bob's machine in its next delta.
	if res, _ := s.delta(store, "a1", early); res == nil || len(res.PeersRemoved) != 1 || res.PeersRemoved[0] != nodeID("b1") || len(res.PeersChanged) != 0 {
		t.Errorf("a1's stream from before the policy: %+v; want b1 removed, nothing added", res)
	}
	// bob's new machine is news to no one.
	join("b2", "u-b")
	for _, c := range []struct {
		self string
		st   *streamState
	}{{"a1", streams["a1"]}, {"a1", early}, {"srv", streams["srv"]}} {
		if res, _ := s.delta(store, c.self, c.st); res != nil && (len(res.PeersChanged) > 0 || len(res.PeersRemoved) > 0) {
			t.Errorf("%s is told of bob's new machine: %+v", c.self, res)
		}
	}
	// The policy lets bob in and alice out: the next deltas say so.
	l.must(t, "policy.set", fsm.Policy{Text: `{"acls": [{"action": "accept", "src": ["bob"], "dst": ["tag:server:*"]}]}`})
	for name, want := range map[string][2]string{"a1": {"", "srv"}, "b1": {"srv", ""}, "srv": {"b1,b2", "a1"}} {
		res, _ := s.delta(store, name, streams[name])
		var removed []string
		for _, id := range res.PeersRemoved {
			for _, n := range store.Nodes("") {
				if nodeID(n.ID) == id {
					removed = append(removed, n.Name)
				}
			}
		}
		if got := [2]string{peers(res.PeersChanged), strings.Join(removed, ",")}; got != want {
			t.Errorf("after the change %s got (added, removed) %q; want %q", name, got, want)
		}
	}
}
