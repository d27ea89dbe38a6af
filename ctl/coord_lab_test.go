package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/overlay/lab"
)

// coordLab is a lab of coord replicas, each a meshctl process on its own host, and an
// "admin" host where the user runs meshctl.
type coordLab struct {
	t        testing.TB
	l        *lab.Lab
	lan      *lab.Network
	admin    *lab.Host
	meshctl  string
	replicas map[string]*replicaHost
	token    string // the first admin's API key
}

type replicaHost struct {
	name  string
	host  *lab.Host
	addr  netip.Addr
	state string
	proc  *lab.Proc
	args  []string
}

func (r *replicaHost) url() string { return fmt.Sprintf("http://%s:8080", r.addr) }

func newCoordLab(t testing.TB) *coordLab {
	l := lab.New(t)
	meshctl, err := exec.LookPath("meshctl")
	if err != nil {
		t.Fatalf("meshctl not on PATH (TestMain puts it there): %v", err)
	}
	cl := &coordLab{t: t, l: l, lan: l.Network("lan"), meshctl: meshctl, replicas: map[string]*replicaHost{}}
	cl.admin = l.Host("admin")
	cl.admin.Attach(cl.lan)
	return cl
}

// start runs replica name; join is the URL of a member to join ("" bootstraps).
func (cl *coordLab) start(name, join, joinToken string) *replicaHost {
	r := cl.replicas[name]
	if r == nil {
		h := cl.l.Host(name)
		r = &replicaHost{name: name, host: h, addr: h.Attach(cl.lan), state: filepath.Join(cl.t.TempDir(), name)}
		cl.replicas[name] = r
		// Plain HTTP between lab hosts: --insecure-join, as the lab has no certificates.
		r.args = []string{"coord", "--id", name, "--state", r.state, "--insecure-join",
			"--http", r.addr.String() + ":8080", "--cluster", r.addr.String() + ":7000"}
		if join != "" {
			r.args = append(r.args, "--join", join, "--join-token", joinToken)
		}
	}
	r.proc = r.host.Start(nil, cl.meshctl, r.args...)
	return r
}

// ctl runs meshctl on the admin host against replica r and returns its stdout.
func (cl *coordLab) ctl(r *replicaHost, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := cl.admin.Command(ctx, cl.meshctl, args...)
	cmd.Env = append(os.Environ(), "MESHCTL_COORD="+r.url(), "MESHCTL_TOKEN="+cl.token)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("meshctl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

func (cl *coordLab) mustCtl(r *replicaHost, args ...string) string {
	cl.t.Helper()
	out, err := cl.ctl(r, args...)
	if err != nil {
		cl.t.Fatal(err)
	}
	return out
}

// daemonUp waits until the daemon started on state serves its socket: an up before that
// would start a second daemon of its own.
func daemonUp(t testing.TB, state string) {
	t.Helper()
	sock := filepath.Join(state, "meshctl.sock")
	eventually(t, 30*time.Second, "the daemon's socket in "+state, func() error {
		if !answers(sock) {
			return fmt.Errorf("no daemon answers on %s", sock)
		}
		return nil
	})
}

// eventually retries f every 50 ms until it succeeds or limit passes.
func eventually(t testing.TB, limit time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (cl *coordLab) status(r *replicaHost) (api.Cluster, error) {
	var st api.Cluster
	out, err := cl.ctl(r, "cluster", "status", "--json")
	if err == nil {
		err = json.Unmarshal([]byte(out), &st)
	}
	return st, err
}

func (cl *coordLab) users(r *replicaHost) (map[string]bool, error) {
	out, err := cl.ctl(r, "user", "list", "--json")
	if err != nil {
		return nil, err
	}
	var us []api.User
	if err := json.Unmarshal([]byte(out), &us); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, u := range us {
		names[u.Name] = true
	}
	return names, nil
}

// waitUsers waits until replica r lists every user in want.
func (cl *coordLab) waitUsers(r *replicaHost, want ...string) {
	cl.t.Helper()
	eventually(cl.t, 15*time.Second, r.name+" lists "+strings.Join(want, ","), func() error {
		got, err := cl.users(r)
		if err != nil {
			return err
		}
		for _, w := range want {
			if !got[w] {
				return fmt.Errorf("%s missing from %v", w, got)
			}
		}
		return nil
	})
}

// adminKey waits for the first admin's API key in a new replica's state directory.
func adminKey(t testing.TB, state string) string {
	t.Helper()
	var key string
	eventually(t, 20*time.Second, "admin.key in "+state, func() error {
		b, err := os.ReadFile(filepath.Join(state, "admin.key"))
		key = strings.TrimSpace(string(b))
		return err
	})
	return key
}

// threeReplicas bootstraps c1 and joins c2 and c3 to it with the cluster token.
func (cl *coordLab) threeReplicas() []*replicaHost {
	c1 := cl.start("c1", "", "")
	cl.token = adminKey(cl.t, c1.state)
	if fi, _ := os.Stat(filepath.Join(c1.state, "admin.key")); fi.Mode().Perm() != 0o600 {
		cl.t.Errorf("admin.key mode %v, want 0600", fi.Mode().Perm())
	}
	var tok struct{ Token string }
	json.Unmarshal([]byte(cl.mustCtl(c1, "cluster", "token", "--json")), &tok)
	c2 := cl.start("c2", c1.url(), tok.Token)
	c3 := cl.start("c3", c1.url(), tok.Token)
	eventually(cl.t, 30*time.Second, "three voters", func() error {
		st, err := cl.status(c3)
		if err == nil && (len(st.Members) != 3 || st.Leader == "") {
			err = fmt.Errorf("members %v, leader %q", st.Members, st.Leader)
		}
		return err
	})
	return []*replicaHost{c1, c2, c3}
}

func (cl *coordLab) leader(from *replicaHost) *replicaHost {
	cl.t.Helper()
	var leader string
	eventually(cl.t, 15*time.Second, "a leader", func() error {
		st, err := cl.status(from)
		if err == nil && st.Leader == "" {
			err = fmt.Errorf("no leader yet")
		}
		leader = st.Leader
		return err
	})
	return cl.replicas[leader]
}

// TestCoordCluster drives a 3-replica coord the way an operator would, through meshctl:
// writes through every replica, kill -9 of the leader, a restart that catches up, a
// restart of all, a partitioned leader, backup and restore.
func TestCoordCluster(t *testing.T) {
	cl := newCoordLab(t)
	rs := cl.threeReplicas()

	// Writes through each replica are seen by all.
	for i, r := range rs {
		cl.mustCtl(r, "user", "create", fmt.Sprintf("through-%d", i))
	}
	for _, r := range rs {
		cl.waitUsers(r, "through-0", "through-1", "through-2")
	}

	// kill -9 the leader: a survivor accepts writes again.
	old := cl.leader(rs[0])
	survivor := rs[0]
	if survivor == old {
		survivor = rs[1]
	}
	old.proc.Kill()
	start := time.Now()
	eventually(t, 20*time.Second, "a write after the leader's death", func() error {
		_, err := cl.ctl(survivor, "user", "create", "after-kill")
		return err
	})
	t.Logf("leader %s killed → writes accepted again through %s in %v", old.name, survivor.name, time.Since(start).Round(time.Millisecond))
	cl.mustCtl(survivor, "user", "create", "while-down")

	// The killed replica restarts with the same command line and catches up.
	cl.start(old.name, "", "")
	cl.waitUsers(old, "after-kill", "while-down")

	// Restart all: the state is intact.
	for _, r := range rs {
		r.proc.Stop()
	}
	for _, r := range rs {
		cl.start(r.name, "", "")
	}
	for _, r := range rs {
		cl.waitUsers(r, "through-0", "through-1", "through-2", "after-kill", "while-down")
	}

	// An operator removes a replica through any member; the other two go on.
	if _, err := cl.ctl(rs[0], "cluster", "remove", "c9"); err == nil || !strings.Contains(err.Error(), `no replica "c9"`) {
		t.Errorf("removing an unknown replica: %v", err)
	}
	cl.mustCtl(rs[0], "cluster", "remove", "c3")
	rs[2].proc.Stop()
	eventually(t, 15*time.Second, "two members", func() error {
		st, err := cl.status(rs[1])
		if err == nil && len(st.Members) != 2 {
			err = fmt.Errorf("members %v", st.Members)
		}
		return err
	})
	cl.mustCtl(rs[1], "user", "create", "after-remove")
}

// TestCoordPartition cuts the leader off from the other two: it cannot commit, they can;
// healing converges.
func TestCoordPartition(t *testing.T) {
	cl := newCoordLab(t)
	rs := cl.threeReplicas()
	minority := cl.leader(rs[0])
	var majority []*replicaHost
	var peers []netip.Addr
	for _, r := range rs {
		if r != minority {
			majority = append(majority, r)
			peers = append(peers, r.addr)
		}
	}
	heal := minority.host.Cut(peers...)

	done := make(chan error, 1)
	go func() {
		_, err := cl.ctl(minority, "user", "create", "minority-write")
		done <- err
	}()
	eventually(t, 20*time.Second, "the majority commits", func() error {
		_, err := cl.ctl(majority[0], "user", "create", "majority-write")
		return err
	})
	if err := <-done; err == nil {
		t.Errorf("the cut-off old leader acknowledged a write")
	}
	heal()
	cl.waitUsers(minority, "majority-write")
	if users, _ := cl.users(majority[1]); users["minority-write"] {
		t.Errorf("a write the minority could not commit appeared after healing")
	}
}

// TestCoordBackup saves a backup, loses state, restores it, and restores it into a
// different cluster.
func TestCoordBackup(t *testing.T) {
	cl := newCoordLab(t)
	c1 := cl.start("c1", "", "")
	cl.token = adminKey(t, c1.state)
	cl.mustCtl(c1, "user", "create", "keep-me")
	file := filepath.Join(t.TempDir(), "meshwork.backup")
	cl.mustCtl(c1, "backup", "save", file)
	cl.mustCtl(c1, "user", "delete", "keep-me")
	cl.mustCtl(c1, "user", "create", "after-backup")
	if _, err := cl.ctl(c1, "backup", "restore", "/etc/hostname"); err == nil {
		t.Errorf("restoring a file that is not a backup succeeded")
	}
	cl.mustCtl(c1, "backup", "restore", file)
	got, err := cl.users(c1)
	if err != nil || !got["keep-me"] || got["after-backup"] {
		t.Errorf("after restore: users %v, %v; want keep-me back and after-backup gone", got, err)
	}

	// A replica with a wrong join token is turned away, saying why.
	bad := cl.start("c8", c1.url(), "mj_wrong")
	select {
	case <-bad.proc.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("a replica with a wrong join token is still running")
	}
	if err := bad.proc.Wait(); err == nil {
		t.Errorf("a replica with a wrong join token exited 0")
	}
	if st, _ := cl.status(c1); len(st.Members) != 1 {
		t.Errorf("members after a refused join: %v", st.Members)
	}

	// Into another cluster: its own admin key stops working, the backup's works.
	other := cl.start("c9", "", "")
	ourKey := cl.token
	cl.token = adminKey(t, other.state)
	cl.mustCtl(other, "backup", "restore", file)
	if _, err := cl.ctl(other, "user", "list"); err == nil {
		t.Errorf("the other cluster's own key still works after restoring our backup")
	}
	cl.token = ourKey
	cl.waitUsers(other, "keep-me")
}
