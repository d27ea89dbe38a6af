package ctrd_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"meshwork.dev/workspace/compose"
	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/wsnet"
)

// TestServiceAgentRestart: a new Runtime (the agent restarted) adopts the running service
// without restarting it.
func TestServiceAgentRestart(t *testing.T) {
	e := newSvcEnv(t)
	s := svcSpec("api", 70)
	st := e.run(s)
	rt := &ctrd.Runtime{Namespace: e.rt.Namespace, Machine: e.rt.Machine, Identity: e.rt.Identity, Dir: e.rt.Dir,
		SecretsDir: e.rt.SecretsDir, Logf: t.Logf}
	defer rt.Close()
	var again ctrd.ServiceStatus
	if err := e.host.Do(func() (err error) { again, err = rt.RunService(e.ctx(), s, nil); return err }); err != nil {
		t.Fatal(err)
	}
	if again.PID != st.PID {
		t.Errorf("the new runtime's RunService: pid %d, want %d (adopted)", again.PID, st.PID)
	}
}

// TestServiceAfterReboot: with its task, network namespace and secrets tmpfs gone (as after a
// reboot), RunService brings the service back with all three, guard included.
func TestServiceAfterReboot(t *testing.T) {
	e := newSvcEnv(t)
	s := svcSpec("db", 71)
	s.Service.Secrets = []compose.File{{Name: "pw", Content: compose.Sensitive("hunter2")}}
	s.Allow = []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}
	e.run(s)
	if err := e.rt.StopService(e.ctx(), s.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.host.Do(func() error { return wsnet.Teardown(ctrd.ServiceNetConfig(s)) }); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(filepath.Join(e.rt.SecretsDir, s.ID), unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	e.run(s)
	if got := e.sh(s.ID, "cat /run/secrets/pw"); got != "hunter2" {
		t.Errorf("secret after the reboot: %q", got)
	}
	e.waitEcho(netip.MustParseAddr("100.64.0.1"), s.IPv4).Close() // namespace and veth back
	if e.canConnect(netip.MustParseAddr("100.64.0.2"), s.IPv4) {
		t.Error("after the reboot the guard is gone")
	}
}

// TestServiceUnknownImage: an image that cannot be had fails the service, naming it.
func TestServiceUnknownImage(t *testing.T) {
	e := newSvcEnv(t)
	e.rt.PullTimeout = 2 * time.Second
	s := svcSpec("ghost", 72)
	s.Service.Image = "meshwork.dev/svcb-no-such-image:1"
	t.Cleanup(func() { e.host.Do(func() error { return e.rt.DeleteService(context.Background(), s.ID) }) })
	var st ctrd.ServiceStatus
	err := e.host.Do(func() (err error) { st, err = e.rt.RunService(e.ctx(), s, nil); return err })
	if err == nil || !strings.Contains(err.Error(), s.Service.Image) || st.State != ctrd.StateFailed {
		t.Errorf("RunService = %+v, %v; want failed, naming the image", st, err)
	}
	if _, ok := e.status(s.ID); ok {
		t.Error("a service whose image could not be had is listed")
	}
}
