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
	// The peer's address in the IPv4 header: the source coming in, the destination going out.
	match := func(offset uint32, p netip.Addr) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.AsSlice()},
		}
	}
	var in, out [][]expr.Any
	for _, p := range peers {
		in, out = append(in, match(12, p)), append(out, match(16, p))
	}
	return h.drop("lab-cut", in, out)
}

// DropUDP drops every UDP packet into and out of h, as a network that lets only TCP through
// would. It returns the function that lifts the block.
func (h *Host) DropUDP() (undo func()) {
	h.lab.t.Helper()
	udp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{17}}, // IPPROTO_UDP
	}
	return h.drop("lab-noudp", [][]expr.Any{udp}, [][]expr.Any{udp})
}

// drop installs table name in h: packets coming in that match any of in, and going out that
// match any of out, are dropped. It returns the function that removes the table.
func (h *Host) drop(name string, in, out [][]expr.Any) func() {
	h.lab.t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(h.h)))
	if err != nil {
		h.lab.t.Fatalf("lab: %s on %s: %v", name, h.name, err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: name})
	for _, hook := range []struct {
		name    string
		hook    *nftables.ChainHook
		matches [][]expr.Any
	}{{"input", nftables.ChainHookInput, in}, {"output", nftables.ChainHookOutput, out}} {
		ch := c.AddChain(&nftables.Chain{Name: hook.name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: hook.hook, Priority: nftables.ChainPriorityFilter})
		for _, m := range hook.matches {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(m[:len(m):len(m)], &expr.Verdict{Kind: expr.VerdictDrop})})
		}
	}
	if err := c.Flush(); err != nil {
		h.lab.t.Fatalf("lab: %s on %s: %v", name, h.name, err)
	}
	return func() {
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			h.lab.t.Logf("lab: removing %s on %s: %v", name, h.name, err)
		}
	}
}
