package coord

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"meshwork.dev/coord/api"
)

// backupLines splits a backup into its header and its records as {"t":…,"o":…} maps.
func backupLines(t *testing.T, b []byte) []map[string]json.RawMessage {
	t.Helper()
	var out []map[string]json.RawMessage
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var l map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("backup line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// adminID is the ID of the user "admin" in a backup.
func adminID(t *testing.T, backup []byte) string {
	t.Helper()
	for _, l := range backupLines(t, backup) {
		var u struct{ ID, Name string }
		if string(l["t"]) == `"users"` && json.Unmarshal(l["o"], &u) == nil && u.Name == "admin" {
			return u.ID
		}
	}
	t.Fatal("no admin in the backup")
	return ""
}

// withRecords appends records (table, object) to a backup.
func withRecords(t *testing.T, backup []byte, recs ...any) []byte {
	t.Helper()
	out := bytes.Clone(backup)
	for i := 0; i < len(recs); i += 2 {
		o, err := json.Marshal(recs[i+1])
		if err != nil {
			t.Fatal(err)
		}
		l, _ := json.Marshal(map[string]any{"t": recs[i], "o": json.RawMessage(o)})
		out = append(append(out, l...), '\n')
	}
	return out
}

// TestRestoreLargeBackup: a backup of over 100 MiB (no single Raft entry may be that big)
// restored through a follower of a three-replica cluster reaches every replica whole: each
// then saves the same backup, holding the restored records and the restore in the audit
// log, and the cluster takes writes again. Under the race detector the backup is 20 MiB
// (still over what one forwarded call carries): 100 MiB took minutes there.
func TestRestoreLargeBackup(t *testing.T) {
	// Three replicas in one process on a shared 2-core machine each parse the 100 MiB in
	// turn: give them time to answer heartbeats meanwhile.
	urls, admin := startReplicasWith(t, 3, func(c *Config) { c.RaftHeartbeat = 2 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	hc := &http.Client{Timeout: 4 * time.Minute}
	clients := make([]*api.Client, len(urls))
	follower := -1
	for i, u := range urls {
		clients[i] = &api.Client{Base: u, Token: admin, HTTP: hc}
		var st api.Cluster
		if err := clients[i].Do(ctx, "GET", "/v1/cluster", nil, &st); err != nil {
			t.Fatal(err)
		}
		if st.State != "Leader" {
			follower = i
		}
	}
	var backup bytes.Buffer
	if err := clients[0].Do(ctx, "GET", "/v1/backup", nil, &backup); err != nil {
		t.Fatalf("backup save: %v", err)
	}
	owner := adminID(t, backup.Bytes())
	recs := []any{"nodes", map[string]any{"id": "n1", "name": "wm1", "user_id": owner, "ipv4": "100.64.9.9"}}
	compose := strings.Repeat("x", 1<<20) // sealed compose files are opaque to the state
	envs, want := 110, 100<<20
	if raceEnabled {
		envs, want = 20, 20<<20
	}
	for i := range envs {
		recs = append(recs, "environments", map[string]any{"id": fmt.Sprint("e", i), "name": fmt.Sprint("env", i),
			"owner_id": owner, "machine": "wm1", "compose": compose, "desired": "running",
			"services": []map[string]any{{"name": "db", "image": "postgres"}}})
	}
	big := withRecords(t, backup.Bytes(), recs...)
	if len(big) < want {
		t.Fatalf("the backup is %d bytes, want at least %d", len(big), want)
	}
	start := time.Now()
	if err := clients[follower].Stream(ctx, "PUT", "/v1/backup", bytes.NewReader(big), nil); err != nil {
		t.Fatalf("restoring %d MiB through follower %s: %v", len(big)>>20, urls[follower], err)
	}
	t.Logf("restored %d MiB through a follower in %v", len(big)>>20, time.Since(start).Round(time.Millisecond))

	var first []byte
	for i, c := range clients {
		var got bytes.Buffer
		if err := c.Do(ctx, "GET", "/v1/backup", nil, &got); err != nil {
			t.Fatalf("replica %d: backup save: %v", i+1, err)
		}
		n := strings.Count(got.String(), `{"t":"environments"`)
		if n != envs {
			t.Errorf("replica %d holds %d environments, want %d", i+1, n, envs)
		}
		if i == 0 {
			first = got.Bytes()
		} else if !bytes.Equal(got.Bytes(), first) {
			t.Errorf("replica %d's state differs from replica 1's (%d and %d bytes)", i+1, got.Len(), len(first))
		}
		var audit []api.AuditEvent
		if err := c.Do(ctx, "GET", "/v1/audit?consistency=linearizable", nil, &audit); err != nil {
			t.Fatal(err)
		}
		if len(audit) == 0 || audit[len(audit)-1].Action != "restore" || audit[len(audit)-1].Actor != "admin" {
			t.Errorf("replica %d: the audit log does not end with admin's restore: %+v", i+1, audit[max(len(audit)-2, 0):])
		}
	}
	if err := clients[follower].Do(ctx, "POST", "/v1/users", api.CreateUser{Name: "after", Role: "member"}, nil); err != nil {
		t.Errorf("a write through a follower after the restore: %v", err)
	}
}

// TestRestoreRefusesBadBackup: a backup is checked as the ops check what they create; a bad
// record is refused by name and line, and the state is left as it was.
func TestRestoreRefusesBadBackup(t *testing.T) {
	url, admin := startCoord(t)
	c := &api.Client{Base: url, Token: admin}
	ctx := context.Background()
	var backup bytes.Buffer
	if err := c.Do(ctx, "GET", "/v1/backup", nil, &backup); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "POST", "/v1/users", api.CreateUser{Name: "kept", Role: "member"}, nil); err != nil {
		t.Fatal(err)
	}
	owner := adminID(t, backup.Bytes())
	node := map[string]any{"id": "n1", "name": "wm1", "user_id": owner}
	noAdmin := strings.ReplaceAll(backup.String(), `"role":"admin"`, `"role":"member"`)
	for _, tc := range []struct {
		name, want string
		backup     []byte
	}{
		{"a name that is no DNS label", `user name "Bad Name"`,
			withRecords(t, backup.Bytes(), "users", map[string]any{"id": "u9", "name": "Bad Name", "role": "member"})},
		{"a role that does not exist", `role "root"`,
			withRecords(t, backup.Bytes(), "users", map[string]any{"id": "u9", "name": "eve", "role": "root"})},
		{"a second user with the same name", `a second row with name "admin"`,
			withRecords(t, backup.Bytes(), "users", map[string]any{"id": "u9", "name": "admin", "role": "admin"})},
		{"an API key of no user", `no user with ID "ghost"`,
			withRecords(t, backup.Bytes(), "apikeys", map[string]any{"id": "k9", "user_id": "ghost", "hash": "h"})},
		{"a tag that is not tag:NAME", `tag "prod"`,
			withRecords(t, backup.Bytes(), "authkeys", map[string]any{"id": "a9", "user_id": owner, "hash": "h", "tags": []string{"prod"}})},
		{"a workspace on no machine", `no machine "nowhere"`,
			withRecords(t, backup.Bytes(), "nodes", node, "workspaces", map[string]any{"id": "w9", "name": "dev",
				"owner_id": owner, "machine": "nowhere", "image": "busybox", "desired": "running"})},
		{"a node and a workspace with one name", `same name`,
			withRecords(t, backup.Bytes(), "nodes", node, "workspaces", map[string]any{"id": "w9", "name": "wm1",
				"owner_id": owner, "machine": "wm1", "image": "busybox", "desired": "running"})},
		{"a service holding an address not leased to it", `service "api": address "100.64.0.1" is not leased to it`,
			withRecords(t, backup.Bytes(), "nodes", map[string]any{"id": "n1", "name": "wm1", "user_id": owner, "tags": []string{"tag:workmachine"}},
				"environments", map[string]any{"id": "e9", "name": "qa", "owner_id": owner, "machine": "wm1", "desired": "running",
					"services": []map[string]any{{"name": "api", "image": "x", "ipv4": "100.64.0.1"}}})},
		{"a policy that does not parse", `policy`,
			withRecords(t, backup.Bytes(), "policy", map[string]any{"id": "policy", "policy": map[string]any{"text": "{not json", "version": 1}})},
		{"no admin left", `no admin`, []byte(noAdmin)},
	} {
		err := c.Stream(ctx, "PUT", "/v1/backup", bytes.NewReader(tc.backup), nil)
		if e, ok := err.(*api.Error); !ok || e.Status != 400 || !strings.Contains(e.Message, tc.want) || !strings.HasPrefix(e.Message, "backup") {
			t.Errorf("%s: restore answered %v, want 400 naming the record (%q)", tc.name, err, tc.want)
		}
	}
	var users []api.User
	if err := c.Do(ctx, "GET", "/v1/users", nil, &users); err != nil {
		t.Fatal(err)
	}
	if names := fmt.Sprint(users); len(users) != 2 || !strings.Contains(names, " admin ") || !strings.Contains(names, " kept ") {
		t.Errorf("after refused restores the users are %+v, want admin and kept, as before", users)
	}
}
