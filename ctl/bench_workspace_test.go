package ctl

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"meshwork.dev/workspace/ctrd"
)

// BenchmarkWorkspaceCreate: `meshctl ws create` with the image present → the server in the
// workspace answers a laptop over the mesh (p50, p95; target p50 ≤ 1 s), beside the floor:
// the runtime's own work for the same image on the same machine (network namespace, veth,
// container create, task start), timed in-process. Run with -benchtime 20x for 20 runs.
func BenchmarkWorkspaceCreate(b *testing.B) {
	importEchoImage(b)
	ml := newMeshLab(b)
	wm := ml.workmachine(b, "wm1")
	lp := ml.laptop(b, "lp", ml.in.PublicHost("lp"))
	floorRT := &ctrd.Runtime{Machine: "bench-floor", Identity: "bench-floor", Dir: filepath.Join(b.TempDir(), "floor")}
	defer floorRT.Close()
	var mesh, floor []time.Duration
	for i := range b.N {
		name := fmt.Sprintf("b%d", i)
		start := time.Now()
		out, err := ml.ctl(ml.coord, "ws", "create", name, "--machine", "wm1", "--image", echoImage, "--wait=false", "--json")
		if err != nil {
			b.Fatalf("ws create: %v: %s", err, out)
		}
		ws := ml.workspace(b, name)
		eventually(b, 30*time.Second, name+" answers over the mesh", func() error {
			return wsGreeting(lp.host, ws.IPv4+":8080", name)
		})
		mesh = append(mesh, time.Since(start))
		ml.mustCtl(ml.coord, "ws", "delete", name)

		spec := ctrd.Spec{ID: fmt.Sprintf("floor%d-%d", i, time.Now().UnixNano()), Name: "f" + name, User: "bench",
			Image: echoImage, IPv4: netip.AddrFrom4([4]byte{100, 127, 250, byte(i%250 + 1)})}
		t0 := time.Now()
		if err := wm.host.Do(func() error { _, err := floorRT.Run(context.Background(), spec, nil); return err }); err != nil {
			b.Fatal(err)
		}
		floor = append(floor, time.Since(t0))
		if err := wm.host.Do(func() error { return floorRT.Delete(context.Background(), spec.Name) }); err != nil {
			b.Fatal(err)
		}
	}
	p50, p95 := percentiles(mesh)
	f50, f95 := percentiles(floor)
	b.ReportMetric(p50.Seconds(), "s-p50")
	b.ReportMetric(p95.Seconds(), "s-p95")
	b.ReportMetric(f50.Seconds(), "floor-s-p50")
	b.Logf("ws create → a server in it answers over the mesh, %d runs: p50 %v, p95 %v (target p50 ≤ 1 s); "+
		"the runtime alone (netns, veth, container, task): p50 %v, p95 %v; %.1f× the floor",
		len(mesh), p50.Round(time.Millisecond), p95.Round(time.Millisecond), f50.Round(time.Millisecond), f95.Round(time.Millisecond),
		p50.Seconds()/f50.Seconds())
}

// percentiles are the p50 and p95 of ds (which it sorts).
func percentiles(ds []time.Duration) (p50, p95 time.Duration) {
	slices.Sort(ds)
	return ds[len(ds)/2], ds[min(len(ds)-1, len(ds)*95/100)]
}
