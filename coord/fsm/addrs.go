package fsm

import (
	"net/netip"

	"meshwork.dev/overlay/ipam"
)

// ClusterInit is the payload of cluster.init, applied once when a cluster starts.
type ClusterInit struct {
	ULA string `json:"ula"` // the cluster's IPv6 /48
}

func clusterInit(t *tx) (any, string, error) {
	var req ClusterInit
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	p, err := netip.ParsePrefix(req.ULA)
	if err != nil || p.Bits() != 48 || !p.Addr().Is6() {
		return nil, "", errorf(CodeInvalid, "ULA %q: want an IPv6 /48", req.ULA)
	}
	if meta(t.Txn, "ula") != "" {
		return nil, "cluster", nil // set once: addresses already handed out depend on it
	}
	t.put(tMeta, &metaRow{Key: "ula", Value: p.String()})
	return nil, "cluster", nil
}

// allocate leases the next free mesh address pair to owner. It checks before it writes,
// so a full range refuses the command without a trace.
func allocate(t *tx, owner string) (v4, v6 netip.Addr, err error) {
	ula, perr := netip.ParsePrefix(meta(t.Txn, "ula"))
	if perr != nil {
		return v4, v6, errorf(CodeUnsupported, "the cluster has no IPv6 prefix yet (it is set when coord starts); retry in a moment")
	}
	a := ipam.First
	if next, err := netip.ParseAddr(meta(t.Txn, "next-addr")); err == nil {
		a = next
	}
	for range ipam.Size {
		if get[addrLease](t, tAddrs, "id", a.String()) == nil {
			t.add(tAddrs, &addrLease{Addr: a.String(), Owner: owner})
			t.put(tMeta, &metaRow{Key: "next-addr", Value: ipam.Next(a).String()})
			return a, ipam.IPv6(ula, a), nil
		}
		a = ipam.Next(a)
	}
	return v4, v6, errorf(CodeConflict, "no mesh address left in %v", ipam.CGNAT)
}

// release frees an address leased by allocate.
func release(t *tx, v4 string) {
	if l := get[addrLease](t, tAddrs, "id", v4); l != nil {
		t.del(tAddrs, l)
	}
}
