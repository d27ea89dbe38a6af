package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"meshwork.dev/coord/api"
)

func TestWorkspaceLogs(t *testing.T) {
	rt := &fakeRuntime{dir: t.TempDir()}
	if err := os.WriteFile(rt.LogPath("api"), []byte("one\ntwo\nthree\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &agent{state: &api.MachineState{Admins: []string{"root"}, Workspaces: []api.WorkspaceSpec{{Name: "api", User: "alice"}}}}
	who := func(r *http.Request) (string, error) {
		if u := r.Header.Get("X-Test-User"); u != "" {
			return u, nil
		}
		return "", errors.New("not on the mesh")
	}
	srv := httptest.NewServer(a.machineAPI(rt, who))
	defer srv.Close()
	get := func(user, path string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if user != "" {
			req.Header.Set("X-Test-User", user)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	for _, tt := range []struct {
		user, path string
		code       int
		body       string
	}{
		{"alice", "/v1/workspaces/api/logs", 200, "one\ntwo\nthree\n"},
		{"alice", "/v1/workspaces/api/logs?tail=2", 200, "two\nthree\n"},
		{"root", "/v1/workspaces/api/logs?tail=1", 200, "three\n"},
		{"bob", "/v1/workspaces/api/logs", 404, "no workspace \"api\" of yours (bob) on this machine\n"},
		{"", "/v1/workspaces/api/logs", 401, "who are you? not on the mesh\n"},
		{"alice", "/v1/workspaces/web/logs", 404, "no workspace \"web\" of yours (alice) on this machine\n"},
	} {
		if code, body := get(tt.user, tt.path); code != tt.code || body != tt.body {
			t.Errorf("%s as %q: %d %q, want %d %q", tt.path, tt.user, code, body, tt.code, tt.body)
		}
	}

	// follow: lines written later arrive.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/workspaces/api/logs?tail=1&follow=1", nil)
	req.Header.Set("X-Test-User", "alice")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	f, _ := os.OpenFile(rt.LogPath("api"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("four\n")
	f.Close()
	sc := bufio.NewScanner(res.Body)
	var got []string
	for len(got) < 2 && sc.Scan() {
		got = append(got, sc.Text())
	}
	if strings.Join(got, ",") != "three,four" {
		t.Errorf("follow read %q, want three then four", got)
	}
}

func TestServiceLogs(t *testing.T) {
	m := newFakeMachine(t.TempDir())
	if err := os.WriteFile(m.ServiceLogPath("e_1.redis"), []byte("ready\naccepting connections\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &agent{state: &api.MachineState{Admins: []string{"root"}, Environments: []api.EnvironmentSpec{
		{ID: "e_1", Name: "staging", User: "alice", Services: []api.ServiceAddr{{Name: "redis"}}},
	}}}
	who := func(r *http.Request) (string, error) {
		if u := r.Header.Get("X-Test-User"); u != "" {
			return u, nil
		}
		return "", errors.New("not on the mesh")
	}
	srv := httptest.NewServer(a.machineAPI(m, who))
	defer srv.Close()
	for _, tt := range []struct {
		user, path string
		code       int
		body       string
	}{
		{"alice", "/v1/environments/staging/services/redis/logs", 200, "ready\naccepting connections\n"},
		{"alice", "/v1/environments/staging/services/redis/logs?tail=1", 200, "accepting connections\n"},
		{"root", "/v1/environments/staging/services/redis/logs?tail=1", 200, "accepting connections\n"},
		{"bob", "/v1/environments/staging/services/redis/logs", 403, "bob may not read the logs of environment \"staging\": only its owner and admins may\n"},
		{"bob", "/v1/environments/staging/services/nope/logs", 403, "bob may not read the logs of environment \"staging\": only its owner and admins may\n"},
		{"", "/v1/environments/staging/services/redis/logs", 401, "who are you? not on the mesh\n"},
		{"alice", "/v1/environments/prod/services/redis/logs", 404, "no environment \"prod\" on this machine\n"},
		{"alice", "/v1/environments/staging/services/web/logs", 404, "environment \"staging\" has no service \"web\" (meshctl env status staging lists them)\n"},
	} {
		req, _ := http.NewRequest("GET", srv.URL+tt.path, nil)
		if tt.user != "" {
			req.Header.Set("X-Test-User", tt.user)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tt.code || string(b) != tt.body {
			t.Errorf("%s as %q: %d %q, want %d %q", tt.path, tt.user, res.StatusCode, b, tt.code, tt.body)
		}
	}
}
