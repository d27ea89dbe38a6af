package wsnet

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DivertTable is the nftables table (family inet) inside an environment service's network
// namespace that diverts new TCP connections to one of its ports: to a workspace (a global
// intercept) or to a local proxy (personal intercepts).
const DivertTable = "meshwork_divert"

// Divert sends the new TCP connections that come into a service's namespace for Port
// elsewhere. Connections open before it keep their path until they close.
type Divert struct {
	ID   string // the intercept's ID: counters are per ID
	Port uint16 // the service port whose new connections are diverted
	// To4 and To6 (a global intercept): new connections are DNATed there, IPv4 ones to To4,
	// IPv6 ones to To6, and leave with the service's own address as source, so answers come
	// back through the service's namespace. A zero one: that family is not diverted.
	To4, To6 netip.AddrPort
	// Proxy (personal intercepts): new connections are redirected to this port of the
	// service's own address, where a proxy listens in the namespace. To4 and To6 are unused.
	// The proxy's own connections (to the service or elsewhere) are not diverted.
	Proxy uint16
}

// Validate reports what is wrong with d, naming the field to fix.
func (d Divert) Validate() error {
	switch {
	case d.ID == "":
		return errors.New("wsnet divert: give the intercept's ID")
	case d.Port == 0:
		return fmt.Errorf("wsnet divert %s: give the service port to divert", d.ID)
	case d.Proxy != 0 && (d.To4.IsValid() || d.To6.IsValid()):
		return fmt.Errorf("wsnet divert %s: give either a proxy port (personal) or targets (global), not both", d.ID)
	case d.Proxy == d.Port:
		return fmt.Errorf("wsnet divert %s: proxy port %d is the service port: give the proxy a port of its own", d.ID, d.Proxy)
	case d.Proxy == 0 && !d.To4.IsValid() && !d.To6.IsValid():
		return fmt.Errorf("wsnet divert %s: give a proxy port or a target address (To4, To6)", d.ID)
	case d.To4.IsValid() && (!d.To4.Addr().Is4() || d.To4.Port() == 0):
		return fmt.Errorf("wsnet divert %s: IPv4 target %v: give an IPv4 address and a port", d.ID, d.To4)
	case d.To6.IsValid() && (!d.To6.Addr().Is6() || d.To6.Addr().Is4In6() || d.To6.Port() == 0):
		return fmt.Errorf("wsnet divert %s: IPv6 target %v: give an IPv6 address and a port", d.ID, d.To6)
	}
	return nil
}

// SetDiverts makes c's divert table anew in one transaction: diverts is all that is diverted
// afterwards (none: nothing). At most one Divert per port (personal intercepts on one port
// share one proxy). With global diverts, forwarding is turned on inside the namespace (and
// stays on, so diverted connections still open keep working); the table's forward chain lets
// through only diverted connections. The table's NAT chains stay, empty, when nothing is
// diverted: the kernel translates a connection's packets only while a NAT chain exists, so
// removing them would cut connections diverted before. Teardown removes it all.
func SetDiverts(c Config, diverts []Divert) error {
	if err := validateDiverts(diverts); err != nil {
		return err
	}
	ns, err := netns.GetFromName(c.Netns)
	if err != nil {
		return fmt.Errorf("wsnet divert %s: no network namespace: is the service running? %w", c.Netns, err)
	}
	defer ns.Close()
	if slices.ContainsFunc(diverts, func(d Divert) bool { return d.Proxy == 0 }) {
		if err := divertSysctls(ns); err != nil {
			return fmt.Errorf("wsnet divert %s: %w", c.Netns, err)
		}
	}
	err = withNftAt(ns, func(nc *nftables.Conn) error {
		fillDivertTable(nc, c, diverts)
		return nil
	})
	if err != nil {
		return fmt.Errorf("wsnet divert %s: table %s: %w", c.Netns, DivertTable, err)
	}
	return nil
}

func validateDiverts(diverts []Divert) error {
	ports := map[uint16]string{}
	for _, d := range diverts {
		if err := d.Validate(); err != nil {
			return err
		}
		if other, dup := ports[d.Port]; dup {
			return fmt.Errorf("wsnet divert: %s and %s both divert port %d: give one divert per port", other, d.ID, d.Port)
		}
		ports[d.Port] = d.ID
	}
	return nil
}

// divertSysctls turns forwarding on inside the namespace (packets DNATed to a workspace go out
// by the way they came in) and ICMP redirects off (the host must not be told to skip us).
func divertSysctls(ns netns.NsHandle) error {
	return inNS(ns, func() error {
		for _, kv := range [][2]string{
			{"net/ipv4/ip_forward", "1"},
			{"net/ipv6/conf/all/forwarding", "1"},
			{"net/ipv4/conf/all/send_redirects", "0"},
			{"net/ipv4/conf/" + InsideIf + "/send_redirects", "0"},
		} {
			if err := writeProc(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	})
}

// fillDivertTable queues the table's replacement: prerouting (diverts), postrouting (the
// service's own address as source of diverted connections), forward (diverted only).
func fillDivertTable(nc *nftables.Conn, c Config, diverts []Divert) {
	t := &nftables.Table{Name: DivertTable, Family: nftables.TableFamilyINet}
	nc.AddTable(t) // makes the delete below valid when the table is absent
	nc.DelTable(t)
	t = nc.AddTable(t)
	pre := nc.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	post := nc.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	fwd := nc.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	for _, d := range diverts {
		for _, r := range divertRules(d) {
			nc.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: r, UserData: []byte(d.ID)})
		}
	}
	for _, r := range sourceRules(c) {
		nc.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: r})
	}
	for _, r := range forwardRules() {
		nc.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: r})
	}
}

// divertRules are d's prerouting rules: tcp dport Port, a connection's first SYN, counted, then
// redirected to the proxy or DNATed per family.
func divertRules(d Divert) [][]expr.Any {
	match := append(tcpDport(d.Port), tcpSYN()...)
	match = append(match, &expr.Counter{})
	if d.Proxy != 0 {
		return [][]expr.Any{append(slices.Clone(match),
			&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(d.Proxy)},
			&expr.Redir{RegisterProtoMin: 1})}
	}
	var rules [][]expr.Any
	for _, to := range []netip.AddrPort{d.To4, d.To6} {
		if to.IsValid() {
			r := append(nfproto(to.Addr().Is6()), slices.Clone(match)...)
			rules = append(rules, append(r, dnat(to)...))
		}
	}
	return rules
}

// sourceRules: ct status dnat (a diverted connection, not a redirected one: those never reach
// postrouting) leaves with the service's address of its family.
func sourceRules(c Config) [][]expr.Any {
	var rules [][]expr.Any
	for _, a := range c.addrs() {
		r := append(nfproto(a.Is6()), ctStatus(ctStatusDNAT)...)
		r = append(r, &expr.Immediate{Register: 1, Data: a.AsSlice()},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: natFamily(a.Is6()), RegAddrMin: 1})
		rules = append(rules, r)
	}
	return rules
}

// forwardRules: only diverted connections (and ICMP errors about them) cross the namespace.
func forwardRules() [][]expr.Any {
	return [][]expr.Any{
		append(ctStatus(ctStatusDNAT), accept()),
		append(ctEstablished(), accept()),
		{drop()},
	}
}

// dnat: dnat ip[6] to addr:port.
func dnat(to netip.AddrPort) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: to.Addr().AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(to.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFamily(to.Addr().Is6()), RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

func natFamily(v6 bool) uint32 {
	if v6 {
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_IPV4
}

// nfproto: meta nfproto ipv4|ipv6.
func nfproto(v6 bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(natFamily(v6))}},
	}
}

// tcpDport: meta l4proto tcp; tcp dport port.
func tcpDport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// tcpSYN: tcp flags & (fin|syn|rst|ack) == syn: a connection's opening, so a connection the
// kernel picks up mid-stream (made before conntrack watched) is never diverted half-way.
func tcpSYN() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x17}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
	}
}

// ctStatusDNAT is IPS_DST_NAT: the connection's destination was translated.
const ctStatusDNAT = 1 << 5

// ctStatus: ct status & bit != 0.
func ctStatus(bit uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bit), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// DivertCounts reads how many new connections each divert of c's table has diverted so far,
// by intercept ID. No table: none.
func DivertCounts(c Config) (map[string]uint64, error) {
	ns, err := netns.GetFromName(c.Netns)
	if err != nil {
		return nil, fmt.Errorf("wsnet divert counts %s: no network namespace: is the service running? %w", c.Netns, err)
	}
	defer ns.Close()
	counts := map[string]uint64{}
	err = withNftAt(ns, func(nc *nftables.Conn) error {
		t := &nftables.Table{Name: DivertTable, Family: nftables.TableFamilyINet}
		rules, err := nc.GetRules(t, &nftables.Chain{Name: "prerouting", Table: t})
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					counts[string(r.UserData)] += ctr.Packets
				}
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("wsnet divert counts %s: %w", c.Netns, err)
	}
	return counts, nil
}
