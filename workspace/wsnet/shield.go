package wsnet

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// ShieldTable is the nftables table (family inet) of the SSH shield in the host namespace:
// new connections to a workspace's SSH port from a blocked address are dropped as they are
// forwarded to it. Blocks expire by themselves (set elements with timeouts).
const ShieldTable = "meshwork_shield"

// shieldSets are the blocked-address sets, by address family.
var shieldSets = map[bool]string{false: "blocked4", true: "blocked6"}

// EnableShield makes the shield's table anew (forgetting every block): a chain on the forward
// hook dropping TCP to port 22 from the blocked sets.
func EnableShield() error {
	return shieldErr(withNft(func(c *nftables.Conn) error {
		t := &nftables.Table{Name: ShieldTable, Family: nftables.TableFamilyINet}
		c.AddTable(t)
		c.DelTable(t)
		t = c.AddTable(t)
		ch := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
		for _, v6 := range []bool{false, true} {
			set := &nftables.Set{Table: t, Name: shieldSets[v6], KeyType: nftables.TypeIPAddr, HasTimeout: true}
			if v6 {
				set.KeyType = nftables.TypeIP6Addr
			}
			if err := c.AddSet(set, nil); err != nil {
				return err
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: shieldRule(set, v6)})
		}
		return nil
	}))
}

func shieldErr(err error) error {
	if err != nil {
		return fmt.Errorf("wsnet shield: %w", err)
	}
	return nil
}

// shieldRule: meta nfproto P; saddr @set; meta l4proto tcp; tcp dport 22; tcp flags & (syn|ack)
// == syn; drop. Only new connections: one open when the block began (the failure that caused
// it) must be able to finish, or the client hangs on it for the whole block.
func shieldRule(set *nftables.Set, v6 bool) []expr.Any {
	proto, off, l := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if v6 {
		proto, off, l = unix.NFPROTO_IPV6, 8, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 22}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// Block drops SSH from addr to every workspace on this machine for d (at least a second).
func Block(addr netip.Addr, d time.Duration) error {
	return shieldElement(addr, func(c *nftables.Conn, set *nftables.Set, key []byte) error {
		return c.SetAddElements(set, []nftables.SetElement{{Key: key, Timeout: max(d, time.Second)}})
	})
}

// Unblock lifts a block early; an address not blocked is fine.
func Unblock(addr netip.Addr) error {
	err := shieldElement(addr, func(c *nftables.Conn, set *nftables.Set, key []byte) error {
		return c.SetDeleteElements(set, []nftables.SetElement{{Key: key}})
	})
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

func shieldElement(addr netip.Addr, f func(*nftables.Conn, *nftables.Set, []byte) error) error {
	addr = addr.Unmap()
	return shieldErr(withNft(func(c *nftables.Conn) error {
		t := &nftables.Table{Name: ShieldTable, Family: nftables.TableFamilyINet}
		set, err := c.GetSetByName(t, shieldSets[addr.Is6()])
		if err != nil {
			return fmt.Errorf("the shield is not enabled: %w", err)
		}
		return f(c, set, addr.AsSlice())
	}))
}
