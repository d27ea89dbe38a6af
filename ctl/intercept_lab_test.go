package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"meshwork.dev/coord/api"
	"meshwork.dev/overlay/lab"
	"meshwork.dev/workspace/ctrd"
)

// interceptCompose is the intercept tests' environment: api answers every request with its
// name; client calls api in a loop, a new connection each time, and logs each answer.
const interceptCompose = `services:
  api:
    image: ` + whoamiImage + `
    command: ["whoami", "-listen", ":8080", "-name", "api"]
    ports: ["8080"]
  client:
    image: ` + whoamiImage + `
    command: ["whoami", "-client", "http://api:8080/", "-every", "50ms"]
`

// serviceLog follows a service's log on its machine: next returns the lines written since
// the last call.
type serviceLog struct {
	path string
	off  int64
}

func (l *serviceLog) next(t testing.TB) []string {
	t.Helper()
	f, err := os.Open(l.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(l.off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndexByte(string(b), '\n') + 1 // whole lines only
	l.off += int64(i)
	return strings.Fields(strings.ReplaceAll(string(b[:i]), " ", "_"))
}

// answeredBy waits until the client's requests are answered by who, and returns the lines
// logged meanwhile.
func (l *serviceLog) answeredBy(t testing.TB, who string, limit time.Duration) []string {
	t.Helper()
	var seen []string
	eventually(t, limit, "client's requests answered by "+who, func() error {
		lines := l.next(t)
		seen = append(seen, lines...)
		for _, line := range lines {
			if strings.HasPrefix(line, "ok_") && strings.Contains(line, "_"+who+"_") {
				return nil
			}
		}
		return fmt.Errorf("last lines %v", tail(seen, 3))
	})
	return seen
}

func tail(s []string, n int) []string { return s[max(0, len(s)-n):] }

// failures are the failed requests among lines.
func failures(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "fail_") {
			out = append(out, l)
		}
	}
	return out
}

// httpVia is an HTTP client that dials from lab host h (keep-alive: one connection carries
// many requests), over HTTP/1.1 or, with h2c, HTTP/2 with prior knowledge.
func httpVia(h *lab.Host, h2c bool) *http.Client {
	tr := &http.Transport{DialContext: h.DialContext, Protocols: new(http.Protocols)}
	if h2c {
		tr.Protocols.SetUnencryptedHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// who asks url with header k: v (none when k is "") and returns the answer's first word.
func who(c *http.Client, url, k, v string) (string, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return "", err
	}
	if k != "" {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// intercept is `meshctl intercept status ID --json`, as token's holder.
func (ml *meshLab) intercept(t testing.TB, token, id string) api.Intercept {
	t.Helper()
	out, err := ml.ctlAs(token, nil, "intercept", "status", id, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var ic api.Intercept
	if err := json.Unmarshal([]byte(out), &ic); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return ic
}

// TestIntercepts: alice's environment runs api and a client calling it in a loop on iwm1;
// her workspace on iwm2 serves its own name. A global intercept sends the client's requests
// (and a laptop's) to the workspace and back to api when stopped, none failing; it falls back
// to api within 2 s of the workspace's death and comes back when it starts; it is in place
// after the agent's restart. Personal intercepts of two users on one port get exactly their own
// requests, over HTTP/1.1 keep-alive, h2c and WebSocket, the rest going to api. Nobody points
// traffic at another's workspace.
func TestIntercepts(t *testing.T) {
	importEnvImages(t, "")
	ml := newMeshLab(t)
	wm1, wm2 := ml.workmachine(t, "iwm1"), ml.workmachine(t, "iwm2", "--tools", staticTools(t)) // ws1 runs a static meshctl
	aliceToken, alice := ml.member(t, "alice")
	bobToken, _ := ml.member(t, "bob")
	file := filepath.Join(t.TempDir(), "compose.yaml")
	if err := os.WriteFile(file, []byte(interceptCompose), 0o644); err != nil {
		t.Fatal(err)
	}
	as := func(token string, args ...string) string {
		t.Helper()
		out, err := ml.ctlAs(token, nil, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	as(aliceToken, "env", "create", "ishop", "-f", file, "--machine", "iwm1")
	as(aliceToken, "ws", "create", "ws1", "--machine", "iwm2", "--image", whoamiImage)
	as(ml.token, "ws", "create", "ws2", "--machine", "iwm2", "--image", whoamiImage)
	wm2.pid(t, "ws1")
	wm2.pid(t, "ws2")
	shop := ml.envStatus(t, "ishop")
	apiURL := "http://" + net.JoinHostPort(service(t, shop, "api").IPv4, "8080") + "/"
	log := &serviceLog{path: wm1.runtime(t).ServiceLogPath(shop.ID + ".client")}
	log.answeredBy(t, "api", 30*time.Second)
	laptop := httpVia(alice.host, false)

	// Nobody points traffic at another's workspace, nor intercepts an environment of another's.
	for _, c := range []struct{ token, to, why string }{
		{aliceToken, "ws2:3000", "alice → the admin's workspace"},
		{bobToken, "ws1:3000", "bob → alice's workspace"},
	} {
		if out, err := ml.ctlAs(c.token, nil, "intercept", "start", "ishop/api:8080", "--to", c.to); err == nil {
			t.Errorf("%s: accepted: %s", c.why, out)
		}
	}
	if out, err := ml.ctlAs(aliceToken, nil, "intercept", "start", "ishop/api:9999", "--to", "ws1:3000"); err == nil || !strings.Contains(err.Error(), "8080") {
		t.Errorf("a port api does not expose: %v %s", err, out)
	}

	// Global: the client's requests and the laptop's go to ws1, and back to api at the stop.
	t.Log("global")
	as(aliceToken, "intercept", "start", "ishop/api:8080", "--to", "ws1:3000", "--name", "mine")
	during := log.answeredBy(t, "ws1", 10*time.Second)
	if w, err := who(laptop, apiURL, "", ""); err != nil || !strings.HasPrefix(w, "ws1 ") {
		t.Errorf("the laptop's request to api during the intercept: %q %v", w, err)
	}
	if ic := ml.intercept(t, aliceToken, "mine"); ic.Mode != api.InterceptGlobal || ic.State != api.InterceptActive {
		t.Errorf("intercept status: %+v", ic)
	}
	as(aliceToken, "intercept", "stop", "mine")
	after := log.answeredBy(t, "api", 10*time.Second)
	if f := failures(append(during, after...)); len(f) > 1 {
		t.Errorf("requests failed across start and stop: %v", f)
	}

	// The workspace dies: api answers within 2 s; it starts: intercepted again.
	t.Log("target down")
	as(aliceToken, "intercept", "start", "ishop/api:8080", "--to", "ws1:3000", "--name", "mine")
	log.answeredBy(t, "ws1", 10*time.Second)
	syscall.Kill(wm2.pid(t, "ws1"), syscall.SIGKILL)
	killed := time.Now()
	eventually(t, 10*time.Second, "api answers the laptop again", func() error {
		w, err := who(laptop, apiURL, "", "")
		if err == nil && !strings.HasPrefix(w, "api ") {
			err = fmt.Errorf("answered by %q", w)
		}
		return err
	})
	if d := time.Since(killed); d > 2*time.Second {
		t.Errorf("api answered again %v after the workspace died, want within 2 s", d.Round(10*time.Millisecond))
	}
	eventually(t, 10*time.Second, "status target-down", func() error {
		if ic := ml.intercept(t, aliceToken, "mine"); ic.State != api.InterceptTargetDown {
			return fmt.Errorf("state %s", ic.State)
		}
		return nil
	})
	ml.ctlAs(aliceToken, nil, "ws", "start", "ws1") // the agent may have restarted it already
	wm2.pid(t, "ws1")
	log.answeredBy(t, "ws1", 20*time.Second)

	// The agent of the service's machine restarts: the intercept is still in place. (While
	// the process is down, so is the machine's mesh node: nothing crosses to other machines.)
	t.Log("agent restart")
	wm1.proc.Kill()
	time.Sleep(time.Second)
	wm1.start(ml)
	log.answeredBy(t, "ws1", 30*time.Second)
	time.Sleep(2 * time.Second)
	for _, l := range log.next(t) {
		if !strings.HasPrefix(l, "ok_") || !strings.Contains(l, "_ws1_") {
			t.Errorf("after the agent's restart, the client got %s, want ws1's answers only", l)
		}
	}
	if ic := ml.intercept(t, aliceToken, "mine"); ic.State != api.InterceptActive {
		t.Errorf("after the agent's restart: %+v", ic)
	}
	as(aliceToken, "intercept", "stop", "mine")
	log.answeredBy(t, "api", 10*time.Second)

	// Personal: two users' header matchers on one port, each getting only their requests.
	t.Log("personal")
	as(aliceToken, "intercept", "start", "ishop/api:8080", "--to", "ws1:3000", "--header", "X-Dev=alice", "--name", "alice-api")
	as(ml.token, "intercept", "start", "ishop/api:8080", "--to", "ws2:3000", "--header", "X-Dev=admin", "--name", "admin-api")
	if out, err := ml.ctlAs(aliceToken, nil, "intercept", "start", "ishop/api:8080", "--to", "ws1:3000"); err == nil || !strings.Contains(err.Error(), "409") && !strings.Contains(err.Error(), "intercept") {
		t.Errorf("a global intercept beside personal ones: %v %s", err, out)
	}
	laptop.CloseIdleConnections() // its connection opened before the proxy keeps going straight to api
	want := map[string]string{"alice": "ws1", "admin": "ws2", "": "api"}
	eventually(t, 10*time.Second, "alice's request reaches ws1", func() error {
		if w, err := who(laptop, apiURL, "X-Dev", "alice"); err != nil || !strings.HasPrefix(w, "ws1 ") {
			return fmt.Errorf("%q %v (intercept %+v)", w, err, ml.intercept(t, aliceToken, "alice-api"))
		}
		return nil
	})
	counts := map[string]int{}
	for i := range 200 {
		dev := []string{"alice", "admin", ""}[i%3]
		k := "X-Dev"
		if dev == "" {
			k = ""
		}
		w, err := who(laptop, apiURL, k, dev)
		if err != nil || !strings.HasPrefix(w, want[dev]+" ") {
			t.Errorf("request %d (X-Dev %q): answered %q %v, want %s", i, dev, w, err, want[dev])
		}
		counts[strings.Fields(w + " ?")[0]]++
	}
	if counts["ws1"] != 67 || counts["ws2"] != 67 || counts["api"] != 66 {
		t.Errorf("200 requests answered %v, want ws1 67, ws2 67, api 66", counts)
	}
	h2 := httpVia(alice.host, true)
	for dev, wantAns := range map[string]string{"alice": "ws1 HTTP/2.0", "": "api HTTP/2.0"} {
		k := "X-Dev"
		if dev == "" {
			k = ""
		}
		if w, err := who(h2, apiURL, k, dev); err != nil || w != wantAns {
			t.Errorf("h2c with X-Dev %q: %q %v, want %q", dev, w, err, wantAns)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(apiURL, "http:", "ws:", 1)+"ws", &websocket.DialOptions{
		HTTPClient: laptop, HTTPHeader: http.Header{"X-Dev": {"alice"}}})
	if err != nil {
		t.Fatalf("websocket through the proxy: %v", err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "ws1: hi" {
		t.Errorf("websocket echo with X-Dev alice: %q %v, want ws1: hi", msg, err)
	}
	if f := failures(log.answeredBy(t, "api", 5*time.Second)); len(f) > 0 {
		t.Errorf("the client's requests (no header) failed under personal intercepts: %v", f)
	}
	if ic := ml.intercept(t, aliceToken, "alice-api"); ic.Mode != api.InterceptPersonal || ic.State != api.InterceptActive {
		t.Errorf("alice's personal intercept: %+v", ic)
	}

	// Inside ws1, meshctl needs no key: it lists the intercepts pointing here, and starts
	// one to "this workspace".
	ws1 := wm2.pid(t, "ws1")
	if out, err := inside(ws1, ctrd.ToolsPath+"/meshctl", "intercept", "list"); err != nil || !strings.Contains(out, "alice-api") || strings.Contains(out, "admin-api") {
		t.Errorf("meshctl intercept list in ws1: %v\n%s", err, out)
	}
	if out, err := inside(ws1, ctrd.ToolsPath+"/meshctl", "intercept", "start", "ishop/api:8080", "--to", ":3000", "--header", "X-Dev=inside", "--name", "inws"); err != nil {
		t.Errorf("meshctl intercept start --to :3000 in ws1: %v\n%s", err, out)
	}
	laptop.CloseIdleConnections()
	if w, err := who(laptop, apiURL, "X-Dev", "inside"); err != nil || !strings.HasPrefix(w, "ws1 ") {
		t.Errorf("X-Dev inside after starting it in ws1: %q %v", w, err)
	}

	// Deleting a workspace ends the intercepts that point at it.
	as(ml.token, "ws", "delete", "ws2")
	if out := as(ml.token, "intercept", "list"); strings.Contains(out, "admin-api") {
		t.Errorf("admin-api outlived ws2:\n%s", out)
	}
}
