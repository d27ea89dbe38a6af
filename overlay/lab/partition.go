package lab

import (
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Cut drops every IPv4 packet between h and each of peers, both ways, as a failed link would:
// silently, no resets. It returns the function that heals the cut.
func (h *Host) Cut(peers ...netip.Addr) (heal func()) {
	h.lab.t.Helper()
	const name = "lab-cut"
	c, err := nftables.New(nftables.WithNetNSFd(int(h.h)))
	if err != nil {
		h.lab.t.Fatalf("lab: cut on %s: %v", h.name, err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: name})
	for _, hook := range []struct {
		name   string
		hook   *nftables.ChainHook
		offset uint32 // of the peer's address in the IPv4 header: source on input, destination on output
	}{{"input", nftables.ChainHookInput, 12}, {"output", nftables.ChainHookOutput, 16}} {
		ch := c.AddChain(&nftables.Chain{Name: hook.name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: hook.hook, Priority: nftables.ChainPriorityFilter})
		for _, p := range peers {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: hook.offset, Len: 4},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.AsSlice()},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}})
		}
	}
	if err := c.Flush(); err != nil {
		h.lab.t.Fatalf("lab: cut on %s: %v", h.name, err)
	}
	return func() {
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			h.lab.t.Logf("lab: healing the cut on %s: %v", h.name, err)
		}
	}
}
