package control

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshwork.dev/coord/fsm"
	"meshwork.dev/overlay/ipam"
)

// TestWorkspaceRecords: MagicDNS answers a workspace's name with both its addresses in a
// cluster on ipam.ULA, and only with its IPv4 in a cluster made before, whose random /48
// clients would not route (they would try that IPv6 first and wait out a timeout).
func TestWorkspaceRecords(t *testing.T) {
	for _, tc := range []struct {
		ula  string
		want []string
	}{
		{ipam.ULA.String(), []string{"100.64.0.2", "fd7a:115c:a1e0::6440:2"}},
		{"fd00:1:2::/48", []string{"100.64.0.2"}},
	} {
		l := &local{f: fsm.New(t.Logf)}
		l.must(t, "cluster.init", fsm.ClusterInit{ULA: tc.ula})
		l.must(t, "user.create", fsm.User{ID: "u", Name: "u", Role: fsm.RoleAdmin})
		l.must(t, "node.register", fsm.Node{ID: "n1", Name: "wm1", UserID: "u", Tags: []string{fsm.WorkmachineTag}})
		l.must(t, "workspace.create", fsm.Workspace{ID: "w1", Name: "api", OwnerID: "u", Machine: "wm1", Image: "img"})
		s := &Server{Backend: l}
		var got []string
		for _, r := range s.dnsConfig(l.f.Store(), &visibility{}).ExtraRecords {
			if r.Name == "api.mesh.internal." {
				got = append(got, r.Value)
			}
		}
		slices.Sort(got)
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("cluster on %s: records of api (-want +got):\n%s", tc.ula, diff)
		}
	}
}
