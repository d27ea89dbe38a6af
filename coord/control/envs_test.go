package control

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go4.org/netipx"
	"tailscale.com/tailcfg"
	"tailscale.com/wgengine/filter"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/secret"
	"meshwork.dev/overlay/ipam"
)

const (
	stagingCompose = "services:\n  api:\n    image: api\n  db:\n    image: pg\n"
	stagingSecret  = "pw-xyzzy-7"
)

// world is a mesh with environments: admin root (laptop r-laptop), members alice (a-laptop)
// and bob (b-laptop); workmachines wm1 and wm2 (tagged, root's); alice's environment staging
// (api, db) on wm1 with her workspace a-ws on wm2 connected to it and a-ws2 on wm1 not;
// bob's environment prod (web) on wm2 and his workspace b-ws on wm1.
type world struct {
	t   *testing.T
	l   *local
	s   *Server
	key *secret.Key
}

func newWorld(t *testing.T) *world {
	var k secret.Key
	rand.Read(k[:])
	w := &world{t: t, l: &local{f: fsm.New(t.Logf)}, key: &k}
	w.s = &Server{Backend: w.l, Secrets: &k}
	must := func(op string, data any) { w.l.must(t, op, data) }
	must("cluster.init", fsm.ClusterInit{ULA: ipam.ULA.String()})
	for _, u := range []fsm.User{{ID: "u-root", Name: "root", Role: fsm.RoleAdmin}, {ID: "u-a", Name: "alice", Role: fsm.RoleMember}, {ID: "u-b", Name: "bob", Role: fsm.RoleMember}} {
		must("user.create", u)
	}
	node := func(name, user string, tags ...string) {
		must("node.register", fsm.Node{ID: name, Name: name, UserID: user, Tags: tags, NodeKey: "nodekey:" + name, MachineKey: "mkey:" + name})
	}
	node("wm1", "u-root", fsm.WorkmachineTag)
	node("wm2", "u-root", fsm.WorkmachineTag)
	node("r-laptop", "u-root")
	node("a-laptop", "u-a")
	node("b-laptop", "u-b")
	must("workspace.create", fsm.Workspace{ID: "w1", Name: "a-ws", OwnerID: "u-a", Machine: "wm2", Image: "img"})
	must("workspace.create", fsm.Workspace{ID: "w2", Name: "a-ws2", OwnerID: "u-a", Machine: "wm1", Image: "img"})
	must("workspace.create", fsm.Workspace{ID: "w3", Name: "b-ws", OwnerID: "u-b", Machine: "wm1", Image: "img"})
	vars, _ := json.Marshal(map[string]string{"DB_PASSWORD": stagingSecret})
	must("environment.create", fsm.Environment{ID: "e1", Name: "staging", OwnerID: "u-a", Machine: "wm1",
		Compose:   base64.StdEncoding.EncodeToString(k.Seal([]byte(stagingCompose), []byte(secret.ComposeAAD("staging")))),
		Variables: base64.StdEncoding.EncodeToString(k.Seal(vars, []byte(secret.VariablesAAD("staging")))),
		Services:  []fsm.Service{{Name: "api", Image: "api", Ports: []int{8080}}, {Name: "db", Image: "pg"}}})
	must("environment.create", fsm.Environment{ID: "e2", Name: "prod", OwnerID: "u-b", Machine: "wm2",
		Compose:  base64.StdEncoding.EncodeToString(k.Seal([]byte("services:\n  web:\n    image: web\n"), []byte(secret.ComposeAAD("prod")))),
		Services: []fsm.Service{{Name: "web", Image: "web"}}})
	must("workspace.connect", fsm.Connect{Workspace: "a-ws", Env: "staging"})
	return w
}

func (w *world) store() *fsm.Store { return w.l.f.Store() }

// addr is the IPv4 (v6: the IPv6) of a node, a workspace or "env/service".
func (w *world) addr(name string, v6 bool) netip.Addr {
	st := w.store()
	var v4s, v6s string
	if env, svc, ok := strings.Cut(name, "/"); ok {
		for _, s := range st.Environment(env).Services {
			if s.Name == svc {
				v4s, v6s = s.IPv4, s.IPv6
			}
		}
	} else if n := st.Node(name); n != nil {
		v4s, v6s = n.IPv4, n.IPv6
	} else if ws := st.Workspace(name); ws != nil {
		v4s, v6s = ws.IPv4, ws.IPv6
	}
	s := v4s
	if v6 {
		s = v6s
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		w.t.Fatalf("no address for %s", name)
	}
	return a
}

// TestMachineStateEnvironments: the hosting machine, and only it, gets an environment's
// compose file and variables in the clear, its services' addresses and the addresses
// allowed to reach them; workspaces say which environment they are connected to.
func TestMachineStateEnvironments(t *testing.T) {
	w := newWorld(t)
	st, err := w.s.machineState(w.store(), "wm1")
	if err != nil || len(st.Environments) != 1 {
		t.Fatalf("wm1's state: %+v, %v", st, err)
	}
	env := st.Environments[0]
	if env.Name != "staging" || env.User != "alice" || env.Compose != stagingCompose || env.Variables["DB_PASSWORD"] != stagingSecret || env.Desired != fsm.Running ||
		env.Generation == 0 || env.Generation != w.store().Environment("staging").Generation {
		t.Errorf("staging as wm1 gets it: %+v", env)
	}
	wantSvcs := []api.ServiceAddr{
		{Name: "api", IPv4: w.addr("staging/api", false).String(), IPv6: w.addr("staging/api", true).String()},
		{Name: "db", IPv4: w.addr("staging/db", false).String(), IPv6: w.addr("staging/db", true).String()}}
	if diff := cmp.Diff(wantSvcs, env.Services); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	var want []string
	for _, n := range []string{"a-ws", "a-laptop", "r-laptop"} { // not b-laptop, a-ws2, b-ws, nor the workmachines
		want = append(want, w.addr(n, false).String(), w.addr(n, true).String())
	}
	slices.SortFunc(want, func(a, b string) int { return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b)) })
	if diff := cmp.Diff(want, env.Allow); diff != "" {
		t.Errorf("Allow (-want +got):\n%s", diff)
	}
	st2, err := w.s.machineState(w.store(), "wm2")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(st2)
	if len(st2.Environments) != 1 || st2.Environments[0].Name != "prod" || strings.Contains(string(b), stagingSecret) || strings.Contains(string(b), "image: api") {
		t.Errorf("wm2's state carries another machine's environment: %s", b)
	}
	if i := slices.IndexFunc(st2.Workspaces, func(s api.WorkspaceSpec) bool { return s.Name == "a-ws" }); i < 0 || st2.Workspaces[i].Env != "staging" {
		t.Errorf("a-ws on wm2: %+v; want Env staging", st2.Workspaces)
	}
	if lap, _ := w.s.machineState(w.store(), "a-laptop"); len(lap.Environments) != 0 {
		t.Errorf("alice's laptop gets environments: %+v", lap.Environments)
	}
	if _, err := (&Server{Backend: w.l}).machineState(w.store(), "wm1"); err == nil || !strings.Contains(err.Error(), "--secret-key-file") {
		t.Errorf("a replica without the key: %v; want an error naming --secret-key-file", err)
	}
}

// TestMachineStateDigest: the digest follows what the agent acts on — a connection made on
// another machine changes Allow, and so the digest — and not the index alone.
func TestMachineStateDigest(t *testing.T) {
	w := newWorld(t)
	before, _ := w.s.machineState(w.store(), "wm1")
	w.l.must(t, "workspace.status", fsm.WorkspaceStatus{Name: "a-ws", Machine: "wm2", State: "running"})
	same, _ := w.s.machineState(w.store(), "wm1")
	if same.Index == before.Index || same.Digest != before.Digest {
		t.Errorf("a status report elsewhere: index %d → %d, digest %s → %s; want a new index, the same digest", before.Index, same.Index, before.Digest, same.Digest)
	}
	w.l.must(t, "workspace.connect", fsm.Connect{Workspace: "a-ws", Env: ""})
	after, _ := w.s.machineState(w.store(), "wm1")
	if after.Digest == before.Digest || len(after.Environments[0].Allow) != len(before.Environments[0].Allow)-2 {
		t.Errorf("a-ws (on wm2) disconnected: digest %s → %s, Allow %v → %v", before.Digest, after.Digest, before.Environments[0].Allow, after.Environments[0].Allow)
	}
}

// TestServiceReports: a machine's report of its services is recorded once; the same again
// writes nothing; another machine's report on them, or on a service that is not there, is not.
func TestServiceReports(t *testing.T) {
	w := newWorld(t)
	wm1, wm2 := w.store().Node("wm1"), w.store().Node("wm2")
	ctx := context.Background()
	rep := []api.ServiceReport{{Env: "staging", Name: "api", State: api.ServiceRunning, Health: api.HealthHealthy, Generation: 4},
		{Env: "staging", Name: "ghost", State: api.ServiceRunning}, {Env: "nope", Name: "x", State: api.ServiceRunning}}
	w.s.recordServices(ctx, w.store(), wm2, rep[:1])
	if svc := w.store().Environment("staging").Services[0]; svc.State != "" {
		t.Fatalf("wm2's report on wm1's service was stored: %+v", svc)
	}
	w.s.recordServices(ctx, w.store(), wm1, rep)
	svc := w.store().Environment("staging").Services[0]
	if svc.Name != "api" || svc.State != api.ServiceRunning || svc.Health != api.HealthHealthy || svc.Generation != 4 {
		t.Errorf("api after wm1's report: %+v", svc)
	}
	index := w.l.index
	w.s.recordServices(ctx, w.store(), wm1, rep)
	if w.l.index != index {
		t.Errorf("the same report again wrote %d more entries", w.l.index-index)
	}
}

// TestServiceRoutesAndNames: the hosting machine routes its services' addresses; the mesh's
// DNS names them <svc>.<env>.<domain>, to those who may see them under a policy.
func TestServiceRoutesAndNames(t *testing.T) {
	w := newWorld(t)
	api4, api6 := w.addr("staging/api", false), w.addr("staging/api", true)
	routes := func(name string) []netip.Prefix { return w.s.tailNode(w.store(), w.store().Node(name)).AllowedIPs }
	if r := routes("wm1"); !slices.Contains(r, netip.PrefixFrom(api4, 32)) || !slices.Contains(r, netip.PrefixFrom(api6, 128)) {
		t.Errorf("wm1's AllowedIPs %v lack api's addresses", r)
	}
	if r := routes("wm2"); slices.Contains(r, netip.PrefixFrom(api4, 32)) {
		t.Errorf("wm2 routes a service it does not host: %v", r)
	}
	records := func(self string) []string {
		rules, _ := w.s.filter(w.store(), nil)
		vis := w.s.visibilityOf(w.store(), w.store().Node(self), rules)
		var out []string
		for _, r := range w.s.dnsConfig(w.store(), vis).ExtraRecords {
			if r.Name == "api.staging.mesh.internal." {
				out = append(out, r.Value)
			}
		}
		slices.Sort(out)
		return out
	}
	want := []string{api4.String(), api6.String()}
	if got := records("b-laptop"); !cmp.Equal(got, want) {
		t.Errorf("no policy: records %v; want %v", got, want)
	}
	w.l.must(t, "policy.set", fsm.Policy{Text: `{"acls": [{"action": "accept", "src": ["alice"], "dst": ["*:*"]}]}`})
	if got := records("a-laptop"); !cmp.Equal(got, want) {
		t.Errorf("under a policy, alice's laptop: records %v; want %v", got, want)
	}
	if got := records("b-laptop"); got != nil {
		t.Errorf("under a policy, bob's laptop (which may reach nothing) sees api's records %v", got)
	}
}

// packetFilter is the filter the mesh's nodes enforce now, as tailscale runs it.
func (w *world) packetFilter() *filter.Filter {
	rules, _ := w.s.filter(w.store(), nil)
	return compiledFilter(w.t, rules)
}

func compiledFilter(t *testing.T, rules []tailcfg.FilterRule) *filter.Filter {
	matches, err := filter.MatchesFromFilterRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	var b netipx.IPSetBuilder
	b.AddPrefix(netip.MustParsePrefix("0.0.0.0/0"))
	b.AddPrefix(netip.MustParsePrefix("::/0"))
	local, _ := b.IPSet()
	return filter.New(matches, nil, local, nil, nil, t.Logf)
}

// TestEnvironmentIsolation: with no policy and under one that lets everyone reach "*", a
// service is reached by its own environment, the workspaces connected to it and the owner's
// and admins' machines; not by another member's machine, an unconnected workspace or another
// environment's service. Traffic to anything but services is as before.
func TestEnvironmentIsolation(t *testing.T) {
	w := newWorld(t)
	cases := []struct {
		from, to string
		ok       bool
	}{
		{"a-laptop", "staging/api", true},
		{"a-ws", "staging/api", true}, // connected, on another machine
		{"r-laptop", "staging/api", true},
		{"staging/api", "staging/db", true},
		{"b-laptop", "staging/api", false},
		{"a-ws2", "staging/api", false}, // alice's, not connected
		{"b-ws", "staging/db", false},
		{"wm2", "staging/api", false}, // a workmachine is no one's laptop
		{"prod/web", "staging/api", false},
		{"staging/api", "prod/web", false},
		{"b-laptop", "prod/web", true},
		{"b-laptop", "a-ws", true}, // not a service: as before
		{"b-laptop", "wm1", true},
		{"staging/api", "b-laptop", true},
	}
	check := func(policy string) {
		f := w.packetFilter()
		for _, c := range cases {
			for _, v6 := range []bool{false, true} {
				got := f.CheckTCP(w.addr(c.from, v6), w.addr(c.to, v6), 8080) == filter.Accept
				if got != c.ok {
					t.Errorf("%s: %s → %s:8080 (IPv6 %v) allowed %v; want %v", policy, c.from, c.to, v6, got, c.ok)
				}
			}
		}
	}
	check("no policy")
	w.l.must(t, "policy.set", fsm.Policy{Text: `{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}`})
	check(`policy "*" → "*:*"`)
}

// TestFilterFollowsConnections: connecting a workspace reaches every map stream as a new
// filter that lets it in; a service's status report sends nothing.
func TestFilterFollowsConnections(t *testing.T) {
	w := newWorld(t)
	var st streamState
	if w.s.mapResponse(w.store(), "nodekey:wm1", &st) == nil {
		t.Fatal("no map for wm1")
	}
	w.l.must(t, "environment.status", fsm.EnvironmentStatus{Env: "staging", Machine: "wm1", Services: []fsm.ServiceStatus{{Name: "api", State: "running"}}})
	if res, _ := w.s.delta(w.store(), "wm1", &st); res != nil {
		t.Errorf("a status report sent %+v", res)
	}
	from, to := w.addr("a-ws2", false), w.addr("staging/api", false)
	w.l.must(t, "workspace.connect", fsm.Connect{Workspace: "a-ws2", Env: "staging"})
	res, _ := w.s.delta(w.store(), "wm1", &st)
	if res == nil || res.PacketFilter == nil {
		t.Fatalf("after connect: %+v; want a new packet filter", res)
	}
	if compiledFilter(t, res.PacketFilter).CheckTCP(from, to, 80) != filter.Accept {
		t.Errorf("the new filter does not let the connected workspace in")
	}
	w.l.must(t, "workspace.connect", fsm.Connect{Workspace: "a-ws2", Env: ""})
	res, _ = w.s.delta(w.store(), "wm1", &st)
	if res == nil || res.PacketFilter == nil || compiledFilter(t, res.PacketFilter).CheckTCP(from, to, 80) != filter.Drop {
		t.Errorf("after disconnect the workspace still reaches the service")
	}
}
