package fsm

import (
	"fmt"
	"strings"
	"testing"
)

// TestCaps: every value a command copies into the state is capped; a command over a cap is
// refused, naming the cap, and changes nothing.
func TestCaps(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok("authkey.create", AuthKey{ID: "k", UserID: "u2", Hash: "h", Reusable: true})
	h.ok("node.join", Join{ID: "n2", Hostname: "laptop", MachineKey: "mkey:2", NodeKey: "nodekey:2", AuthKeyID: "k"})
	many := func(n int, f func(i int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	endpoints := many(MaxEndpoints+1, func(i int) string { return fmt.Sprintf("198.18.%d.%d:41641", i/250, i%250) })
	tags := many(MaxTags+1, func(i int) string { return fmt.Sprint("tag:t", i) })
	long := strings.Repeat("x", 300)
	ws := func(f func(w *Workspace)) Workspace {
		w := Workspace{ID: "w9", Name: "big", OwnerID: "u2", Machine: "wm1", Image: "img"}
		f(&w)
		return w
	}
	services := make([]Service, MaxServices+1)
	for i := range services {
		services[i] = Service{Name: fmt.Sprint("s", i), Image: "img"}
	}
	tests := []struct {
		name, op string
		data     any
		says     string
	}{
		{"too many endpoints", "node.update", NodeUpdate{NodeKey: "nodekey:2", Endpoints: endpoints}, "endpoints: 65 is over the limit of 64"},
		{"an endpoint that is not ip:port", "node.update", NodeUpdate{NodeKey: "nodekey:2", Endpoints: []string{"hello"}}, "want ip:port"},
		{"a long endpoint", "node.update", NodeUpdate{NodeKey: "nodekey:2", Endpoints: []string{long}}, "bytes of an endpoint"},
		{"a long OS", "node.update", NodeUpdate{NodeKey: "nodekey:2", OS: long}, "bytes of the OS name"},
		{"a long disco key", "node.update", NodeUpdate{NodeKey: "nodekey:2", DiscoKey: long}, "bytes of a key"},
		{"a long OS at join", "node.join", Join{ID: "n3", Hostname: "h", MachineKey: "mkey:3", NodeKey: "nodekey:3", AuthKeyID: "k", OS: long}, "bytes of the OS name"},
		{"a long host name", "node.join", Join{ID: "n3", Hostname: long, MachineKey: "mkey:3", NodeKey: "nodekey:3", AuthKeyID: "k"}, "bytes of the host name"},
		{"a long machine key", "node.join", Join{ID: "n3", Hostname: "h", MachineKey: long, NodeKey: "nodekey:3", AuthKeyID: "k"}, "bytes of a key"},
		{"a registered node's endpoints", "node.register", Node{ID: "n4", Name: "n4", UserID: "u1", Endpoints: endpoints}, "endpoints: 65"},
		{"a registered node's tags", "node.register", Node{ID: "n4", Name: "n4", UserID: "u1", Tags: tags}, "tags: 33"},
		{"too many tags on an auth key", "authkey.create", AuthKey{ID: "k2", UserID: "u2", Hash: "h", Tags: tags}, "tags: 33 is over the limit of 32"},
		{"a long API key name", "apikey.create", APIKey{ID: "a2", UserID: "u2", Hash: "h", Name: long}, "bytes of an API key's name"},
		{"a long image reference", "workspace.create", ws(func(w *Workspace) { w.Image = strings.Repeat("i", MaxImageRef+1) }), "bytes of the image reference: 513"},
		{"too many CPUs", "workspace.create", ws(func(w *Workspace) { w.CPU = MaxCPU + 1 }), "CPUs is over the limit"},
		{"too much memory", "workspace.create", ws(func(w *Workspace) { w.MemoryBytes = MaxMemory + 1 }), "memory is over the limit"},
		{"too many services", "environment.create", Environment{ID: "e9", Name: "big", OwnerID: "u2", Machine: "wm1", Services: services}, "services: 65"},
		{"too many ports", "environment.create", Environment{ID: "e9", Name: "big", OwnerID: "u2", Machine: "wm1",
			Services: []Service{{Name: "s", Image: "i", Ports: make([]int, MaxPorts+1)}}}, "ports of service s: 65"},
		{"a service's long image reference", "environment.create", Environment{ID: "e9", Name: "big", OwnerID: "u2", Machine: "wm1",
			Services: []Service{{Name: "s", Image: strings.Repeat("i", MaxImageRef+1)}}}, "image reference of service s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := string(snapshotBytes(t, h.f.Store()))
			h.t = t
			res := h.apply(tt.op, tt.data)
			if res.Err == nil || res.Err.Code != CodeInvalid || !strings.Contains(res.Err.Msg, tt.says) {
				t.Errorf("%s = %v; want invalid, saying %q", tt.op, res.Err, tt.says)
			}
			if after := string(snapshotBytes(t, h.f.Store())); after != before {
				t.Errorf("a refused command changed the state")
			}
		})
	}
	h.t = t
	h.ok("node.update", NodeUpdate{NodeKey: "nodekey:2", Endpoints: endpoints[:MaxEndpoints], OS: strings.Repeat("o", MaxOS)})
	h.ok("workspace.create", ws(func(w *Workspace) {
		w.Image, w.CPU, w.MemoryBytes = strings.Repeat("i", MaxImageRef), MaxCPU, MaxMemory
	}))
}
