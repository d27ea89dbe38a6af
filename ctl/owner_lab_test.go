package ctl

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestTwoClustersOneContainerd: two clusters' workmachines with the same name run on one
// containerd. The second agent's start (which removes workspaces its coord does not want)
// leaves the first's workspace running; each agent's machine lists only its own; deleting
// one cluster's workspace leaves the other's; the first agent, restarted, adopts its own.
func TestTwoClustersOneContainerd(t *testing.T) {
	importEchoImage(t)
	a, b := newMeshLab(t), newMeshLab(t)
	const machine = "hv6same"
	wmA := a.workmachine(t, machine)
	a.mustCtl(a.coord, "ws", "create", "keep", "--machine", machine, "--image", echoImage)
	pid := wmA.pid(t, "keep")

	wmB := b.workmachine(t, machine)
	b.mustCtl(b.coord, "ws", "create", "other", "--machine", machine, "--image", echoImage)
	wmB.pid(t, "other")
	list := func(wm *workmachine) []string {
		var out []string
		eventually(t, 10*time.Second, "list "+wm.name+"'s workspaces", func() error {
			l, err := wm.runtime(t).List(context.Background())
			out = nil
			for _, s := range l {
				out = append(out, s.Name)
			}
			return err
		})
		return out
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Errorf("cluster a's workspace died when cluster b's agent of the same name started: %v", err)
	}
	if got := list(wmA); !slices.Equal(got, []string{"keep"}) {
		t.Errorf("cluster a's machine holds %v; want [keep]", got)
	}
	if got := list(wmB); !slices.Equal(got, []string{"other"}) {
		t.Errorf("cluster b's machine holds %v; want [other]", got)
	}

	b.mustCtl(b.coord, "ws", "delete", "other")
	eventually(t, 30*time.Second, "other gone", func() error {
		if got := list(wmB); len(got) != 0 {
			return fmt.Errorf("cluster b's machine still holds %v", got)
		}
		return nil
	})
	wmA.proc.Kill()
	wmA.start(a)
	time.Sleep(2 * time.Second)
	if again := wmA.pid(t, "keep"); again != pid {
		t.Errorf("cluster a's restarted agent restarted keep: pid %d, was %d", again, pid)
	}
}
