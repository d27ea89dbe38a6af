package ctl

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPolicyCommands: against a real coord, meshctl policy test runs a file's tests without
// setting it; policy set refuses a file whose test fails, naming it, and keeps the policy in
// force; policy explain names the rule that allows, or default deny.
func TestPolicyCommands(t *testing.T) {
	c := startEnvCoord(t)
	c.run(t, "ws", "create", "api", "--machine", "wm1", "--image", "meshwork.dev/dev:1", "--wait=false")
	file := func(text string) string {
		p := filepath.Join(t.TempDir(), "policy.hujson")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if out := c.run(t, "policy", "explain", "wm1", "ws:api:22"); !strings.Contains(out, "allowed: no policy is set") {
		t.Errorf("explain without a policy: %s", out)
	}
	good := file(`{
		// wm1 may reach api's SSH port, nothing else of it
		"acls": [{"action": "accept", "src": ["tag:workmachine"], "dst": ["ws:api:22"]}],
		"tests": [{"src": "wm1", "accept": ["ws:api:22"], "deny": ["ws:api:80"]}],
	}`)
	if out := c.run(t, "policy", "test", good); !strings.Contains(out, "valid, 1 tests pass") {
		t.Errorf("policy test: %s", out)
	}
	if out := c.run(t, "policy", "get"); out != "" {
		t.Errorf("policy test set the policy: %q", out)
	}
	c.run(t, "policy", "set", good)
	bad := file("{\n  \"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}],\n  \"tests\": [\n    {\"src\": \"wm1\", \"deny\": [\"ws:api:80\"]},\n  ],\n}")
	for _, verb := range []string{"test", "set"} {
		out, err := meshctlAt(c.url, c.admin, "", "policy", verb, bad)
		var stderr bytes.Buffer
		ExitCode(err, &stderr)
		msg := out + stderr.String()
		if err == nil || !strings.Contains(msg, `line 4: tests[0] (src "wm1"): deny ws:api:80 fails`) {
			t.Errorf("policy %s with a failing test: %v %s; want it refused, naming the test", verb, err, msg)
		}
	}
	if out := c.run(t, "policy", "get"); !strings.Contains(out, "ws:api:22") {
		t.Errorf("after a refused set the policy is %q; want the old one", out)
	}
	if out := c.run(t, "policy", "explain", "wm1", "ws:api:22"); !strings.Contains(out, "allowed: acls[0]") {
		t.Errorf("explain wm1 → ws:api:22: %s", out)
	}
	if out := c.run(t, "policy", "explain", "wm1", "ws:api:80"); !strings.Contains(out, "denied: no rule allows") {
		t.Errorf("explain wm1 → ws:api:80: %s", out)
	}
}
