package adminapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/secret"
)

// TestRecordingsFollowIDs: a recording is its session's user's and its workspace's owner's,
// by ID: deleting the workspace deletes it, and whoever takes the name next sees nothing.
// The cast is sealed at rest.
func TestRecordingsFollowIDs(t *testing.T) {
	e := newEnv(t)
	apply := func(op string, data any) {
		t.Helper()
		c, _ := fsm.NewCommand(op, "test", "", data)
		if res, _ := e.b.Apply(context.Background(), c); res.Err != nil {
			t.Fatalf("%s: %v", op, res.Err)
		}
	}
	e.register("alice-laptop", "u-alice")
	laptop := e.b.f.Store().Node("alice-laptop")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"version": 2}` + "\n" + `[0.1, "o", "export TOKEN=hunter2\r\n"]` + "\n"))
	zw.Close()
	apply("ssh.end", fsm.SessionEnd{Session: fsm.Session{ID: "s1", Workspace: "alice-ws", Machine: "wm1", From: laptop.IPv4 + ":5000", PTY: true, Duration: 2500 * time.Millisecond},
		Cast: e.key.Seal(gz.Bytes(), []byte(secret.RecordingAAD("s1"))), CastSize: int64(gz.Len())})
	for who, want := range map[string]int{e.alice: 200, e.admin: 200, e.bob: 404} {
		if status, body := e.do(who, "GET", "/v1/recordings/s1", ""); status != want || want == 200 && !strings.Contains(body, "hunter2") {
			t.Errorf("GET the recording as %s: %d %s; want %d", keyID(who), status, body, want)
		}
	}
	if _, body := e.do(e.alice, "GET", "/v1/recordings", ""); !strings.Contains(body, `"duration": 2.5,`) {
		t.Errorf("a recording's duration in the listing is not in seconds: %s", body)
	}
	// alice's workspace goes; bob takes its name.
	if status, body := e.do(e.alice, "DELETE", "/v1/workspaces/alice-ws", ""); status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, body)
	}
	if status, body := e.do(e.bob, "POST", "/v1/workspaces", `{"name": "alice-ws", "machine": "wm1", "image": "img"}`); status != http.StatusCreated {
		t.Fatalf("bob's create: %d %s", status, body)
	}
	for _, who := range []string{e.bob, e.admin, e.alice} {
		if status, body := e.do(who, "GET", "/v1/recordings?workspace=alice-ws", ""); status != 200 || strings.TrimSpace(body) != "[]" {
			t.Errorf("recordings of the new alice-ws as %s: %d %s; want none", keyID(who), status, body)
		}
		if status, _ := e.do(who, "GET", "/v1/recordings/s1", ""); status != 404 {
			t.Errorf("the deleted workspace's recording as %s: %d; want 404", keyID(who), status)
		}
	}
}
