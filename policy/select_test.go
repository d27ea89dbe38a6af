package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// mesh is a small fixed state: alice's laptop and workspace api, bob's laptop and workspace
// web, a tagged workmachine, and environment staging (db, cache) owned by alice.
var mesh = []Host{
	{Kind: Machine, Name: "a-laptop", User: "alice", IPs: ips("100.64.0.1", "fd7a::1")},
	{Kind: Machine, Name: "b-laptop", User: "bob", IPs: ips("100.64.0.2", "fd7a::2")},
	{Kind: Machine, Name: "wm1", User: "root", Tags: []string{"tag:workmachine"}, IPs: ips("100.64.0.3")},
	{Kind: Workspace, Name: "api", User: "alice", IPs: ips("100.64.1.1", "fd7a::101")},
	{Kind: Workspace, Name: "web", User: "bob", IPs: ips("100.64.1.2")},
	{Kind: Service, Name: "db", Env: "staging", User: "alice", IPs: ips("100.64.2.1")},
	{Kind: Service, Name: "cache", Env: "staging", User: "alice", IPs: ips("100.64.2.2")},
}

func ips(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// TestSelectors: each selector, in an acl, lets exactly what it names through; the denied
// cases are shown denied by the packet filter a node runs.
func TestSelectors(t *testing.T) {
	cases := []struct {
		acl     string // src → dst of the one acl
		src     string
		dst     string
		allowed bool
	}{
		{`"src": ["alice"], "dst": ["ws:api:22"]`, "a-laptop", "100.64.1.1:22", true},
		{`"src": ["alice"], "dst": ["ws:api:22"]`, "a-laptop", "100.64.1.1:23", false},
		{`"src": ["alice"], "dst": ["ws:api:22"]`, "b-laptop", "100.64.1.1:22", false},
		{`"src": ["alice"], "dst": ["ws:api:22"]`, "a-laptop", "100.64.1.2:22", false},
		{`"src": ["bob"], "dst": ["ws:owner:alice:*"]`, "b-laptop", "ws:api:8080", true},
		{`"src": ["bob"], "dst": ["ws:owner:alice:*"]`, "b-laptop", "ws:web:8080", false},
		{`"src": ["ws:api"], "dst": ["env:staging:5432"]`, "ws:api", "env:staging/db:5432", true},
		{`"src": ["ws:api"], "dst": ["env:staging:5432"]`, "ws:api", "env:staging/cache:5432", true},
		{`"src": ["ws:api"], "dst": ["env:staging:5432"]`, "ws:web", "env:staging/db:5432", false},
		{`"src": ["ws:api"], "dst": ["env:staging/db:5432"]`, "ws:api", "env:staging/db:5432", true},
		{`"src": ["ws:api"], "dst": ["env:staging/db:5432"]`, "ws:api", "env:staging/cache:5432", false},
		{`"src": ["*"], "dst": ["tag:workmachine:22"]`, "b-laptop", "wm1:22", true},
		{`"src": ["*"], "dst": ["tag:workmachine:22"]`, "b-laptop", "a-laptop:22", false},
		{`"src": ["*"], "dst": ["autogroup:self:*"]`, "alice", "ws:api:22", true},
		{`"src": ["*"], "dst": ["autogroup:self:*"]`, "ws:api", "a-laptop:22", true},
		{`"src": ["*"], "dst": ["autogroup:self:*"]`, "bob", "ws:api:22", false},
		{`"src": ["*"], "dst": ["autogroup:self:*"]`, "bob", "a-laptop:22", false},
		{`"src": ["*"], "dst": ["autogroup:self:*"]`, "alice", "wm1:22", false}, // tagged: no one's own
		{`"src": ["*"], "dst": ["autogroup:self:*"]`, "alice", "env:staging/db:22", false},
		{`"src": ["office"], "dst": ["ws:web:80"]`, "10.1.2.3", "ws:web:80", true},
		{`"src": ["office"], "dst": ["ws:web:80"]`, "10.2.0.1", "ws:web:80", false},
		// bare names, users and groups select machines only, as before
		{`"src": ["alice"], "dst": ["bob:*"]`, "ws:api", "b-laptop:22", false},
		{`"src": ["alice"], "dst": ["bob:*"]`, "a-laptop", "ws:web:22", false},
	}
	for _, c := range cases {
		text := `{"hosts": {"office": "10.1.0.0/16"}, "acls": [{"action": "accept", ` + c.acl + `}]}`
		p, err := Parse([]byte(text))
		if err != nil {
			t.Fatalf("%s: %v", c.acl, err)
		}
		rules, err := p.Filter(mesh)
		if err != nil {
			t.Fatal(err)
		}
		v, err := p.Explain(mesh, rules, c.src, c.dst)
		if err != nil {
			t.Fatalf("%s: Explain(%s, %s): %v", c.acl, c.src, c.dst, err)
		}
		if v.Allowed != c.allowed {
			t.Errorf("{%s}: %s → %s allowed %v (%s); want %v", c.acl, c.src, c.dst, v.Allowed, v.Text, c.allowed)
		}
		if v.Allowed && v.Rule != 0 || !v.Allowed && (v.Rule != -1 || !strings.Contains(v.Text, "no rule allows")) {
			t.Errorf("{%s}: %s → %s: verdict %+v", c.acl, c.src, c.dst, v)
		}
	}
}

// TestExplain names the acl that allows, as written, and default deny otherwise.
func TestExplain(t *testing.T) {
	p, err := Parse([]byte(`{"acls": [
		{"action": "accept", "src": ["bob"], "dst": ["wm1:22"]},
		{"action": "accept", "src": ["alice"], "dst": ["ws:api:22,8000-8999"]},
	]}`))
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := p.Filter(mesh)
	v, err := p.Explain(mesh, rules, "alice", "ws:api:8080")
	if err != nil || !v.Allowed || v.Rule != 1 || !strings.Contains(v.Text, `acls[1] {"action":"accept","src":["alice"],"dst":["ws:api:22,8000-8999"]}`) {
		t.Errorf("alice → ws:api:8080: %+v, %v; want allowed by acls[1]", v, err)
	}
	v, err = p.Explain(mesh, rules, "bob", "ws:api:22")
	if err != nil || v.Allowed || v.Rule != -1 || !strings.Contains(v.Text, "100.64.0.2 → 100.64.1.1:22") {
		t.Errorf("bob → ws:api:22: %+v, %v; want denied, naming the pair", v, err)
	}
	if v, err := p.Explain(mesh, rules, "10.0.0.1", "fd7a::101:22"); err != nil || v.Allowed {
		t.Errorf("an IPv4 source to an IPv6 destination: %+v, %v; want denied", v, err)
	}
	for _, bad := range [][2]string{{"ghost", "ws:api:22"}, {"alice", "ws:ghost:22"}, {"alice", "ws:api"}, {"alice", "ws:api:1-2"}, {"nope:x", "ws:api:22"}} {
		if _, err := p.Explain(mesh, rules, bad[0], bad[1]); err == nil {
			t.Errorf("Explain(%s, %s) gave no error", bad[0], bad[1])
		}
	}
}

// TestTests: a policy's tests pass when the filter agrees and fail naming the test, its
// line, its src and the destination that failed.
func TestTests(t *testing.T) {
	base := `{
		"acls": [
			{"action": "accept", "src": ["alice"], "dst": ["ws:api:22"]},
			{"action": "accept", "src": ["*"], "dst": ["env:staging/cache:6379"]},
		],
		"tests": [
			{"src": "alice", "accept": ["ws:api:22"], "deny": ["ws:api:23", "ws:web:22", "env:prod:5432"]},
%s
		],
	}`
	cases := []struct{ test, want string }{
		{`{"src": "bob", "deny": ["ws:api:22"]}`, ""},
		{`{"src": "bob", "accept": ["ws:api:22"]}`, `line 8: tests[1] (src "bob"): accept ws:api:22 fails: no rule allows 100.64.0.2 → 100.64.1.1:22`},
		{`{"src": "ws:web", "deny": ["env:staging:6379"]}`, `tests[1] (src "ws:web"): deny env:staging:6379 fails: 100.64.1.2 → 100.64.2.2:6379 is allowed by acls[1]`},
		{`{"src": "carol", "accept": ["ws:api:22"]}`, `tests[1] (src "carol"): accept ws:api:22: src "carol": names no machine`},
	}
	for _, c := range cases {
		p, err := Parse([]byte(strings.Replace(base, "%s", c.test, 1)))
		if err != nil {
			t.Fatal(err)
		}
		rules, _ := p.Filter(mesh)
		err = p.RunTests(mesh, rules)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("test %s: %v; want %q", c.test, err, c.want)
		}
	}
}

// TestLines: malformed or wrong values are named by their line, with what to write.
func TestLines(t *testing.T) {
	cases := []struct{ text, want string }{
		{"{\n  // a comment\n  \"acls\": [\n    {\"action\": \"accept\" \"src\": []},\n  ],\n}", "line 4"},
		{"{\n  /* two\n  lines */\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\n      \"*:*\",\n      \"api:http\",\n    ]},\n  ],\n}", "line 7: acls[0]: dst \"api:http\": ports \"http\": write *, 22"},
		{"{\n  \"acls\": [\n    {\"action\": \"accept\",\n     \"src\": [\"wss:api\"], \"dst\": [\"*:*\"]},\n  ],\n}", "line 4: acls[0]: \"wss:api\" is no selector: write *"},
		{"{\n\n  \"egress\": [{\"src\": [\"alice\"], \"exit\": \"x\"}],\n}", "line 3: egress[0]: src \"alice\": egress pins workspaces"},
		{"{\n  \"tests\": [\n\n    {\"src\": \"alice\", \"accept\": [\"ws:api:22-23\"]},\n  ],\n}", "line 4: tests[0]: accept: dst \"ws:api:22-23\": a test names one destination and one port"},
		{"{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"],\n     \"dest\": [\"*:*\"]},\n  ],\n}", `line 4: unknown field "dest"`},
		{"{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": \"*\", \"dst\": [\"*:*\"]},\n  ],\n}", "line 3: acls.src: this is string, write a list"},
		{"{\n  \"ssh\": [\n    {\"action\": \"accept\", \"src\": [\"autogroup:self\"], \"dst\": [\"api\"], \"users\": [\"root\"]},\n  ],\n}", "line 3: ssh[0]: autogroup:self is a destination only"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v; want %q", c.text, err, c.want)
		}
	}
}

// TestExitFor: the egress section pins workspaces, first match wins.
func TestExitFor(t *testing.T) {
	p, err := Parse([]byte(`{"egress": [{"src": ["ws:api"], "exit": "eu"}, {"src": ["ws:owner:bob"], "exit": "us"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][3]string{{"api", "bob", "eu"}, {"web", "bob", "us"}, {"web", "alice", ""}} {
		if got := p.ExitFor(c[0], c[1]); got != c[2] {
			t.Errorf("ExitFor(%s, %s) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
}

func FuzzCompile(f *testing.F) {
	f.Add(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["autogroup:self:*", "ws:api:22"]}], "tests": [{"src": "alice", "accept": ["ws:api:22"]}]}`)
	f.Add(`{"hosts": {"o": "10.0.0.0/8"}, "acls": [{"action": "accept", "src": ["o", "ws:owner:bob"], "dst": ["env:staging/db:1-9"]}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse([]byte(s))
		if err != nil {
			return
		}
		rules, err := p.Filter(mesh)
		if err != nil {
			t.Fatalf("a parsed policy does not compile: %v", err)
		}
		p.RunTests(mesh, rules)
		p.Explain(mesh, rules, "alice", "ws:api:22")
	})
}
