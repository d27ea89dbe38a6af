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
	v4s, v6s, err := allocateAll(t, []string{owner})
	if err != nil {
		return v4, v6, err
	}
	return v4s[0], v6s[0], nil
}

// allocateAll leases a free mesh address pair to each of owners, all or none: it finds
// them all before it writes, so a full range refuses the command without a trace.
func allocateAll(t *tx, owners []string) (v4s, v6s []netip.Addr, err error) {
	if len(owners) == 0 {
		return nil, nil, nil
	}
	ula, perr := netip.ParsePrefix(meta(t.Txn, "ula"))
	if perr != nil {
		return nil, nil, errorf(CodeUnsupported, "the cluster has no IPv6 prefix yet (it is set when coord starts); retry in a moment")
	}
	a := ipam.First
	if next, err := netip.ParseAddr(meta(t.Txn, "next-addr")); err == nil {
		a = next
	}
	for i := 0; i < ipam.Size && len(v4s) < len(owners); i++ {
		if get[addrLease](t, tAddrs, "id", a.String()) == nil {
			v4s = append(v4s, a)
		}
		a = ipam.Next(a)
	}
	if len(v4s) < len(owners) {
		return nil, nil, errorf(CodeConflict, "no mesh address left in %v for %d more", ipam.CGNAT, len(owners))
	}
	for i, v4 := range v4s {
		t.add(tAddrs, &addrLease{Addr: v4.String(), Owner: owners[i]})
		v6s = append(v6s, ipam.IPv6(ula, v4))
	}
	t.put(tMeta, &metaRow{Key: "next-addr", Value: ipam.Next(v4s[len(v4s)-1]).String()})
	return v4s, v6s, nil
}

// release frees an address leased by allocate.
func release(t *tx, v4 string) {
	if l := get[addrLease](t, tAddrs, "id", v4); l != nil {
		t.del(tAddrs, l)
	}
}

// serviceOwner is the lease owner of service svc of environment env.
func serviceOwner(env, svc string) string { return "service/" + env + "/" + svc }
