package ctrd_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"meshwork.dev/workspace/ctrd"
)

// names lists rt's workspaces by name.
func names(t *testing.T, ctx context.Context, rt *ctrd.Runtime) []string {
	t.Helper()
	l, err := rt.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range l {
		out = append(out, s.Name)
	}
	slices.Sort(out)
	return out
}

// TestSameMachineNameTwoOwners: two runtimes on one containerd whose machines share a name
// (two clusters, two labs) but not an identity: neither lists, deletes nor runs the other's
// workspaces.
func TestSameMachineNameTwoOwners(t *testing.T) {
	e := newEnv(t)
	twin := &ctrd.Runtime{Namespace: testNamespace, Machine: e.rt.Machine, Identity: "other-cluster", Dir: t.TempDir(), StopGrace: time.Second, Logf: t.Logf}
	t.Cleanup(func() { twin.Close() })
	ours, theirs := spec("erin", 20), spec("fred", 21)
	e.run(ours)
	e.runWith(twin, theirs)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	if got := names(t, ctx, e.rt); !slices.Equal(got, []string{ours.Name}) {
		t.Errorf("our List = %v; want only %s", got, ours.Name)
	}
	if got := names(t, ctx, twin); !slices.Equal(got, []string{theirs.Name}) {
		t.Errorf("the twin's List = %v; want only %s", got, theirs.Name)
	}
	for _, c := range []struct {
		rt   *ctrd.Runtime
		name string
	}{{twin, ours.Name}, {e.rt, theirs.Name}} {
		if err := e.do(func() error { return c.rt.Delete(ctx, c.name) }); err != nil {
			t.Errorf("%s: Delete(%s): %v", c.rt.Identity, c.name, err)
		}
		if err := c.rt.Stop(ctx, c.name); !errors.Is(err, ctrd.ErrNotFound) {
			t.Errorf("%s: Stop(%s) = %v; want not found", c.rt.Identity, c.name, err)
		}
	}
	if got := e.hello(ours.IPv4); got != "hello from "+ours.Name {
		t.Errorf("ours after the twin's Delete: %q", got)
	}
	if got := e.hello(theirs.IPv4); got != "hello from "+theirs.Name {
		t.Errorf("the twin's after our Delete: %q", got)
	}
	if _, err := twin.Run(ctx, ours, nil); err == nil || !strings.Contains(err.Error(), "belongs to machine") {
		t.Errorf("the twin's Run of our workspace id: %v; want refused", err)
	}
}

// TestUpgradeAdoptsUnownedContainers: a container an older build made (no owner label) is
// adopted by the upgraded agent of its machine, same pid, and labelled as its own; a runtime
// of another lab with the same machine name does not take it.
func TestUpgradeAdoptsUnownedContainers(t *testing.T) {
	e := newEnv(t)
	s := spec("gina", 22)
	first := e.run(s)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	c, err := containerd.New(ctrd.DefaultAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cctx := namespaces.WithNamespace(ctx, testNamespace)
	ctr, err := c.LoadContainer(cctx, ctrd.ContainerID(s.ID))
	if err != nil {
		t.Fatal(err)
	}
	owner := func() (string, bool) {
		l, err := ctr.Labels(cctx)
		if err != nil {
			t.Fatal(err)
		}
		v, ok := l[ctrd.LabelOwner]
		return v, ok
	}
	// As the older build left it: no owner label.
	if _, err := ctr.SetLabels(cctx, map[string]string{ctrd.LabelOwner: ""}); err != nil {
		t.Fatal(err)
	}
	if v, ok := owner(); ok {
		t.Fatalf("owner label still %q after removing it", v)
	}
	e.rt.Close()

	otherLab := &ctrd.Runtime{Namespace: testNamespace, Machine: e.rt.Machine, Identity: "other-lab", Dir: t.TempDir(), Logf: t.Logf}
	t.Cleanup(func() { otherLab.Close() })
	if got := names(t, ctx, otherLab); len(got) != 0 {
		t.Errorf("another lab's runtime with the same machine name lists %v", got)
	}
	if _, ok := owner(); ok {
		t.Errorf("another lab's runtime labelled the old container")
	}

	upgraded := newRuntime(t, e.rt.Machine, e.rt.Dir)
	if got := names(t, ctx, upgraded); !slices.Equal(got, []string{s.Name}) {
		t.Errorf("the upgraded agent's List = %v; want %s", got, s.Name)
	}
	if v, _ := owner(); v != upgraded.Identity {
		t.Errorf("owner label after the upgrade = %q; want %q", v, upgraded.Identity)
	}
	var st ctrd.Status
	if err := e.do(func() (err error) { st, err = upgraded.Run(ctx, s, nil); return err }); err != nil {
		t.Fatal(err)
	}
	if st != first {
		t.Errorf("the upgraded agent's Run = %+v; want the running task adopted, %+v", st, first)
	}
}
