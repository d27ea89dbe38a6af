package ctl

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"meshwork.dev/workspace/ctrd"
)

// TestSSHAfterRecreate: a workspace's container and network namespace are deleted behind the
// agent (as a crash, an operator or a reboot would); the agent makes them anew, and `meshctl
// ssh` into the workspace works again within a bounded time (its SSH listener follows the
// namespace, not the name).
func TestSSHAfterRecreate(t *testing.T) {
	importEchoImage(t)
	ml := newMeshLab(t)
	ml.workmachine(t, "hag-wm1")
	lp := ml.laptop(t, "hag-lp", ml.in.PublicHost("hag-lp"))
	ml.mustCtl(ml.coord, "ws", "create", "hagws", "--machine", "hag-wm1", "--image", echoImage)
	admin := []string{"--coord", ml.coord.url(), "--token", ml.token}
	sshTrue := func() error {
		out, errOut, code := sshRun(lp, nil, ml.meshctl, append(admin, "ssh", "hagws", "--", "true")...)
		if code != 0 {
			return fmt.Errorf("meshctl ssh hagws -- true: exit %d: %s%s", code, out, errOut)
		}
		return nil
	}
	eventually(t, 60*time.Second, "meshctl ssh hagws", sshTrue)

	netns := removeBehindAgent(t, "hag-wm1", "hagws")
	t.Logf("removed hagws's container and namespace %s behind the agent", netns)
	eventually(t, 60*time.Second, "meshctl ssh hagws after its container and namespace were made anew", sshTrue)
}

// removeBehindAgent kills and deletes a workspace's container with containerd's client and
// deletes its network namespace, as `ctr` and `ip netns del` would; it returns the namespace.
func removeBehindAgent(t *testing.T, machine, name string) string {
	t.Helper()
	c, err := containerd.New(ctrd.DefaultAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ctrd.DefaultNamespace), time.Minute)
	defer cancel()
	ctrs, err := c.Containers(ctx, fmt.Sprintf("labels.%q==%s,labels.%q==%s", ctrd.LabelMachine, machine, ctrd.LabelWorkspace, name))
	if err != nil || len(ctrs) != 1 {
		t.Fatalf("%s's container on %s: %d found, %v", name, machine, len(ctrs), err)
	}
	labels, err := ctrs[0].Labels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if task, err := ctrs[0].Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
			t.Fatalf("deleting %s's task: %v", name, err)
		}
	}
	if err := ctrs[0].Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		t.Fatalf("deleting %s's container: %v", name, err)
	}
	netns := labels[ctrd.LabelNetns]
	if out, err := exec.Command("ip", "netns", "del", netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", netns, err, out)
	}
	return netns
}

// TestWorkspaceImageUnavailable: an image on a registry host that does not resolve in the lab
// fails its workspace within the agent's --pull-timeout (not after the resolver's minute of
// timeouts), `meshctl ws create` says so once, and `ws list` shows the failed workspace with
// the reason and the way out.
func TestWorkspaceImageUnavailable(t *testing.T) {
	importEchoImage(t)
	ml := newMeshLab(t)
	ml.workmachine(t, "hag-wm2", "--pull-timeout", "4s")
	img := "registry.hag-nosuch.example/hag/none:1"
	start := time.Now()
	out, err := ml.ctl(ml.coord, "ws", "create", "hagbad", "--machine", "hag-wm2", "--image", img)
	took := time.Since(start)
	all := out + fmt.Sprint(err)
	t.Logf("ws create took %v:\n%s", took, all)
	if err == nil || took > 20*time.Second {
		t.Errorf("ws create with %s: err %v after %v, want a failure within about the 4 s pull timeout", img, err, took)
	}
	if n := strings.Count(all, "could not be pulled"); n != 1 {
		t.Errorf("ws create printed the pull's failure %d times, want once:\n%s", n, all)
	}
	list := ml.mustCtl(ml.coord, "ws", "list")
	for _, want := range []string{"failed", "could not be pulled", "import it", "meshctl ws delete hagbad"} {
		if !strings.Contains(list, want) {
			t.Errorf("ws list lacks %q:\n%s", want, list)
		}
	}
	ml.mustCtl(ml.coord, "ws", "delete", "hagbad")
}
