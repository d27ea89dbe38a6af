package control

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/secret"
)

// TestMachineStateExits: a pinned workspace's spec carries its exit, with our WireGuard
// private key opened, to the machine hosting it and to no other; a node exit carries the
// node's mesh addresses; pinning, changing and unpinning change the digest.
func TestMachineStateExits(t *testing.T) {
	w := newWorld(t)
	priv := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa7}, 32))
	sealed := base64.StdEncoding.EncodeToString(w.key.Seal([]byte(priv), []byte(secret.ExitKeyAAD("fra"))))
	w.l.must(t, "exit.create", fsm.Exit{Name: "fra", Kind: fsm.ExitWireGuard, Endpoint: "203.0.113.9:51820", PublicKey: "peer=",
		Address: "10.64.12.7/32", DNS: []string{"10.64.0.1"}, PublicIP: "203.0.113.9", PrivateKey: sealed})
	w.l.must(t, "exit.create", fsm.Exit{Name: "out", Kind: fsm.ExitNode, Node: "wm2"})
	before, _ := w.s.machineState(w.store(), "wm1")

	w.l.must(t, "workspace.exit", fsm.WorkspaceExit{Workspace: "b-ws", Exit: "fra"})
	st, err := w.s.machineState(w.store(), "wm1")
	if err != nil {
		t.Fatal(err)
	}
	want := &api.ExitSpec{Name: "fra", Kind: api.ExitWireGuard, Endpoint: "203.0.113.9:51820", PeerPublicKey: "peer=",
		PrivateKey: priv, Address: "10.64.12.7/32", DNS: []string{"10.64.0.1"}, PublicIP: "203.0.113.9"}
	if diff := cmp.Diff(want, specOf(st, "b-ws").Exit); diff != "" {
		t.Errorf("b-ws's exit on wm1 (-want +got):\n%s", diff)
	}
	if specOf(st, "a-ws2").Exit != nil {
		t.Errorf("an unpinned workspace got an exit")
	}
	if st.Digest == before.Digest {
		t.Errorf("pinning did not change wm1's digest: its agent would not see it")
	}
	for _, m := range []string{"wm2", "a-laptop", "b-laptop", "r-laptop"} {
		other, _ := w.s.machineState(w.store(), m)
		if b, _ := json.Marshal(other); strings.Contains(string(b), priv) {
			t.Errorf("%s's state holds the exit's private key", m)
		}
	}

	w.l.must(t, "workspace.exit", fsm.WorkspaceExit{Workspace: "b-ws", Exit: "out"})
	changed, _ := w.s.machineState(w.store(), "wm1")
	wm2 := w.store().Node("wm2")
	if diff := cmp.Diff(&api.ExitSpec{Name: "out", Kind: api.ExitNode, NodeIPv4: wm2.IPv4, NodeIPv6: wm2.IPv6}, specOf(changed, "b-ws").Exit); diff != "" {
		t.Errorf("b-ws's node exit (-want +got):\n%s", diff)
	}
	if changed.Digest == st.Digest {
		t.Errorf("changing the exit did not change the digest")
	}
	w.l.must(t, "workspace.exit", fsm.WorkspaceExit{Workspace: "b-ws", Exit: ""})
	if after, _ := w.s.machineState(w.store(), "wm1"); after.Digest != before.Digest || specOf(after, "b-ws").Exit != nil {
		t.Errorf("unpinned: digest %s, exit %+v; want the state from before pinning", after.Digest, specOf(after, "b-ws").Exit)
	}

	w.l.must(t, "workspace.exit", fsm.WorkspaceExit{Workspace: "b-ws", Exit: "fra"})
	if _, err := (&Server{Backend: w.l}).machineState(w.store(), "wm1"); err == nil || !strings.Contains(err.Error(), "--secret-key-file") {
		t.Errorf("without a key: %v; want an error naming --secret-key-file", err)
	}
}

func specOf(st *api.MachineState, name string) api.WorkspaceSpec {
	for _, ws := range st.Workspaces {
		if ws.Name == name {
			return ws
		}
	}
	return api.WorkspaceSpec{}
}
