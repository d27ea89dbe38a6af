package ctl

import (
	"bytes"
	"encoding/base64"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"meshwork.dev/coord/api"
)

// wgConf is a wg-quick file for exit fra; exitSecret is our private key in it.
var (
	exitSecret = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5e}, 32))
	wgConf     = "[Interface]\nPrivateKey = " + exitSecret + "\nAddress = 10.64.12.7/32\nDNS = 10.64.0.1\n\n[Peer]\nPublicKey = " +
		base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x21}, 32)) + "\nEndpoint = 203.0.113.9:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n"
)

// TestExitCommands: meshctl adds an exit from a wg-quick file, lists and shows it (never its
// private key), pins a workspace at create and with set-exit (none unpins), shows the pin in
// ws list's EXIT column, and cannot remove an exit in use; the key is in none of coord's
// files in the clear.
func TestExitCommands(t *testing.T) {
	c := startEnvCoord(t)
	conf := filepath.Join(t.TempDir(), "fra.conf")
	if err := os.WriteFile(conf, []byte(wgConf), 0o600); err != nil {
		t.Fatal(err)
	}
	var outs []string
	run := func(args ...string) string {
		out := c.run(t, args...)
		outs = append(outs, out)
		return out
	}
	if out := run("exit", "add", "fra", "--wireguard", conf, "--public-ip", "203.0.113.9"); !strings.Contains(out, "added exit fra (wireguard 203.0.113.9:51820)") ||
		!strings.Contains(out, "meshctl ws set-exit WS fra") {
		t.Errorf("exit add: %s", out)
	}
	if out := run("exit", "list"); !regexpMatch(`NAME +KIND +WHERE +ADDRESS +PUBLIC IP\nfra +wireguard +203\.0\.113\.9:51820 +10\.64\.12\.7/32 +203\.0\.113\.9\n`, out) {
		t.Errorf("exit list:\n%s", out)
	}
	var list []api.Exit
	c.runJSON(t, &list, "exit", "list")
	if len(list) != 1 || list[0].Name != "fra" || list[0].DNS[0] != "10.64.0.1" {
		t.Errorf("exit list --json: %+v", list)
	}
	if out := run("exit", "show", "fra"); !strings.Contains(out, "endpoint:") || !strings.Contains(out, "10.64.0.1") {
		t.Errorf("exit show:\n%s", out)
	}
	run("ws", "create", "dev", "--machine", "wm1", "--image", "img", "--exit", "fra", "--wait=false")
	if out := run("ws", "list"); !regexpMatch(`ENV +EXIT +IPV4[^\n]*\ndev +wm1 +\S+ +- +fra +100\.`, out) {
		t.Errorf("ws list does not show dev pinned to fra:\n%s", out)
	}
	out, err := meshctlAt(c.url, c.admin, "", "exit", "remove", "fra")
	if err == nil || !strings.Contains(err.Error(), "dev") || !strings.Contains(err.Error(), "meshctl ws set-exit dev none") {
		t.Errorf("exit remove in use: %v %s; want refused naming dev and meshctl ws set-exit dev none", err, out)
	}
	if out := run("ws", "set-exit", "dev", "none"); !strings.Contains(out, "machine's uplink again") {
		t.Errorf("set-exit none: %s", out)
	}
	var ws api.Workspace
	c.runJSON(t, &ws, "ws", "set-exit", "dev", "fra")
	if ws.Exit != "fra" {
		t.Errorf("set-exit fra --json: %+v", ws)
	}
	out, err = meshctlAt(c.url, c.admin, "", "ws", "set-exit", "dev", "nope")
	if err == nil || !strings.Contains(err.Error(), "meshctl exit list") {
		t.Errorf("set-exit to an unknown exit: %v %s", err, out)
	}
	run("ws", "set-exit", "dev", "none")
	if out := run("exit", "remove", "fra"); !strings.Contains(out, "removed exit fra") {
		t.Errorf("exit remove: %s", out)
	}
	for _, o := range outs {
		if strings.Contains(o, exitSecret) {
			t.Errorf("meshctl printed the private key:\n%s", o)
		}
	}
	raw, _ := base64.StdEncoding.DecodeString(exitSecret)
	n, sawExit := 0, false
	filepath.WalkDir(c.state, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Error(err)
		}
		n++
		sawExit = sawExit || bytes.Contains(b, []byte("203.0.113.9:51820"))
		if bytes.Contains(b, []byte(exitSecret)) || bytes.Contains(b, raw) {
			t.Errorf("%s holds the exit's private key in the clear", path)
		}
		return nil
	})
	if n == 0 || !sawExit {
		t.Errorf("%d state files, the exit's record in one: %v; the check above looked at nothing", n, sawExit)
	}
}

// TestExitParse: exit add with neither or both of --wireguard and --node, set-exit without
// its two arguments, and an unreadable file fail before any request.
func TestExitParse(t *testing.T) {
	url, calls := noCoord(t)
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"exit", "add", "fra"}, 2, "exactly one of --wireguard FILE or --node NODE"},
		{[]string{"exit", "add", "fra", "--wireguard", "x.conf", "--node", "gw"}, 2, "exactly one of"},
		{[]string{"exit", "add", "--node", "gw"}, 2, "want 1 argument"},
		{[]string{"exit", "add", "fra", "--wireguard", "/nonexistent/fra.conf"}, 1, "reading the wireguard file"},
		{[]string{"ws", "set-exit", "dev"}, 2, "want 2 argument"},
		{[]string{"exit", "bogus"}, 2, `unknown verb "bogus"`},
	} {
		out, err := meshctlAt(url, "mk_test", "", c.args...)
		var stderr bytes.Buffer
		if code := ExitCode(err, &stderr); code != c.code || !strings.Contains(stderr.String()+out, c.says) {
			t.Errorf("%v: exit %d, %s%s; want %d saying %q", c.args, code, out, stderr.String(), c.code, c.says)
		}
	}
	if n := calls(); n != 0 {
		t.Errorf("coord was called %d times", n)
	}
}
