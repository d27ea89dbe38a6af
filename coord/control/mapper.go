package control

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"tailscale.com/net/tsaddr"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
	"tailscale.com/util/zstdframe"

	"meshwork.dev/coord/fsm"
	"meshwork.dev/overlay/meshdns"
	"meshwork.dev/policy"
)

// keepAlive is how often an idle map stream gets a keep-alive.
const keepAlive = 30 * time.Second

// serveMap handles /machine/map: a node's report of itself (endpoints, disco key) and its
// request for the network map, once or as a stream that follows every change.
func (s *Server) serveMap(w http.ResponseWriter, r *http.Request, mk key.MachinePublic) {
	var req tailcfg.MapRequest
	if err := decode(r, &req); err != nil {
		http.Error(w, "bad map request: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	store, err := s.Backend.Read(ctx, "")
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	self := store.NodeByKey(req.NodeKey.String())
	if self == nil || self.MachineKey != mk.String() {
		http.Error(w, "node not registered with this key: register first", http.StatusForbidden)
		return
	}
	// A streaming poll from a current client carries no news about the node (it sends that
	// in separate requests); anything else may update what peers learn about it.
	if !(req.Stream && req.Version >= 68) {
		if err := s.update(ctx, self, &req); err != nil {
			s.logf("control: update %s: %v", self.Name, err)
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	if req.Stream {
		s.streamOpened(self.ID)
		defer s.streamClosed(self)
	}
	compress := req.Compress == "zstd"
	var st streamState
	res := s.mapResponse(store, req.NodeKey.String(), &st)
	if res == nil {
		return
	}
	if err := send(w, compress, res); err != nil || !req.Stream {
		return
	}
	for s.waitChange(ctx, w, compress, store, st.index) {
		if store, err = s.Backend.Read(ctx, ""); err != nil {
			return
		}
		if store.RestoredAt() > st.index {
			// A delta cannot say what a restore changed (the backup's rows are older than
			// what the node has heard): end the stream; the node's next one starts whole.
			s.logf("control: %s: the state was restored from a backup; ending its map stream", self.Name)
			return
		}
		res, ok := s.delta(store, self.ID, &st)
		if !ok {
			return // the node was deleted
		}
		if res != nil && send(w, compress, res) != nil {
			return
		}
	}
}

// streamState is what one map stream has told its node.
type streamState struct {
	index  uint64 // nodes, policy, workspaces and users as of this log index
	policy uint64 // the policy version the node's visibility came from
	filter uint64 // the generation of the packet filter it was sent
	dnsAt  dnsKey // what the DNS records were last made from
	dns    *tailcfg.DNSConfig
	derp   *tailcfg.DERPMap
	vis    *visibility     // what the node may see, as of index
	peers  map[string]bool // the IDs of the peers it was told of; nil: all (no policy)
}

// told reports whether the node was told of peer id.
func (st *streamState) told(id string) bool { return st.peers == nil || st.peers[id] }

// watched are the tables whose changes a map stream follows.
// Environments' addresses are not among them: an environment that gains or loses one marks
// its machine changed.
var watched = []string{fsm.TableNodes, fsm.TablePolicy, fsm.TableWorkspaces, fsm.TableUsers}

// dnsKey is what the DNS records are made from: the workspaces and the environments.
type dnsKey struct{ workspaces, environments uint64 }

func dnsKeyOf(store *fsm.Store) dnsKey {
	return dnsKey{store.TableIndex(fsm.TableWorkspaces), store.TableIndex(fsm.TableEnvironments)}
}

func tablesIndex(store *fsm.Store) uint64 {
	var idx uint64
	for _, t := range watched {
		idx = max(idx, store.TableIndex(t))
	}
	return idx
}

// dnsConfig is the mesh's DNS: the domain, answered by every node (MagicDNS: node names
// come from the map), plus a record for each workspace's and each environment service's
// mesh addresses that vis sees (<workspace>.<domain>, <service>.<env>.<domain>).
func (s *Server) dnsConfig(store *fsm.Store, vis *visibility) *tailcfg.DNSConfig {
	c := &tailcfg.DNSConfig{Domains: []string{s.domain()}, Proxied: true}
	for _, w := range store.Workspaces("") {
		c.ExtraRecords = appendRecords(c.ExtraRecords, vis, w.Name+"."+s.domain()+".", w.IPv4, w.IPv6)
	}
	for _, e := range store.Environments("") {
		for _, svc := range e.Services {
			name := meshdns.ServiceName(svc.Name, e.Name, s.domain()) + "."
			c.ExtraRecords = appendRecords(c.ExtraRecords, vis, name, svc.IPv4, svc.IPv6)
		}
	}
	return c
}

// appendRecords adds records of name for the addresses v4 and v6, if vis sees them.
func appendRecords(recs []tailcfg.DNSRecord, vis *visibility, name, v4, v6 string) []tailcfg.DNSRecord {
	if vis.limited && !vis.sees(hostPrefixes(v4, v6)) {
		return recs
	}
	for _, a := range []string{v4, v6} {
		if clientsRoute(a) {
			recs = append(recs, tailcfg.DNSRecord{Name: name, Value: a})
		}
	}
	return recs
}

// clientsRoute reports whether a is a workspace address Tailscale clients send to the peer
// listing it without --accept-routes: one in 100.64.0.0/10 or Tailscale's ULA /48, as
// ipam.ULA is. A cluster made before that keeps its own random /48; its workspaces' IPv6
// gets no record, else clients would try it first and wait out a timeout on every connection.
func clientsRoute(a string) bool {
	ip, err := netip.ParseAddr(a)
	return err == nil && tsaddr.IsTailscaleIP(ip)
}

// delta is what changed for node self since the stream last sent: the nodes changed and
// removed (O(changes), not O(nodes)), and the filter and DERP map when they changed. nil
// when nothing the node sees changed; ok is false when self itself was deleted. Under a
// policy the node hears only of the peers it may reach or be reached from; a new policy,
// or a change of the node itself, looks at every node again.
func (s *Server) delta(store *fsm.Store, selfID string, st *streamState) (res *tailcfg.MapResponse, ok bool) {
	now := tablesIndex(store)
	changed, gone := store.NodesChangedSince(st.index), store.NodesGoneSince(st.index)
	res = &tailcfg.MapResponse{}
	for _, id := range gone {
		if id == selfID {
			return nil, false
		}
		if st.told(id) {
			res.PeersRemoved = append(res.PeersRemoved, nodeID(id))
			delete(st.peers, id)
		}
	}
	var self *fsm.Node
	for _, n := range changed {
		if n.ID == selfID {
			self, res.Node = n, s.tailNode(store, n)
		}
	}
	pol := store.Policy()
	newPolicy := pol.Version != st.policy
	rules, gen := s.filter(store, nil)
	newFilter := gen != st.filter
	if newFilter {
		res.PacketFilter, st.filter = rules, gen
	}
	if newPolicy || pol.Version != 0 && (newFilter || len(changed) > 0 || len(gone) > 0) {
		// A policy names hosts, so whom the node may see follows the nodes it resolves to.
		st.policy = pol.Version
		if self == nil {
			self = store.NodeByID(selfID)
		}
		if self == nil {
			return nil, false
		}
		st.vis = s.visibilityOf(store, self, rules)
	}
	look := changed
	if newPolicy || st.vis.limited && (res.Node != nil || newFilter) {
		look = store.Nodes("") // whom the node may see may have changed for anyone
	}
	if st.vis.limited && st.peers == nil {
		// A policy came (so look is every node): from now on, keep count of what was told.
		st.peers = toldAll(look, selfID)
	}
	changedIDs := make(map[string]bool, len(changed))
	for _, n := range changed {
		changedIDs[n.ID] = true
	}
	users := map[string]bool{}
	for _, n := range look {
		if n.ID == selfID || n.NodeKey == "" {
			continue
		}
		switch sees := !st.vis.limited || st.vis.sees(nodeAddrs(store, n)); {
		case sees && (changedIDs[n.ID] || !st.told(n.ID)):
			res.PeersChanged = append(res.PeersChanged, s.tailNode(store, n))
			users[n.UserID] = true
			if st.peers != nil {
				st.peers[n.ID] = true
			}
		case !sees && st.told(n.ID):
			res.PeersRemoved = append(res.PeersRemoved, nodeID(n.ID))
			delete(st.peers, n.ID)
		}
	}
	if !st.vis.limited {
		st.peers = nil // it has been told of everyone
	}
	// A peer of a user this node has not heard of needs the user's profile too: without it
	// the node cannot say who is calling from that peer (WhoIs fails).
	res.UserProfiles = userProfiles(store, users)
	if d := s.derpMap(); d != st.derp {
		res.DERPMap, st.derp = d, d
	}
	if k := dnsKeyOf(store); k != st.dnsAt || newPolicy || newFilter && st.vis.limited {
		st.dnsAt = k
		if c := s.dnsConfig(store, st.vis); !reflect.DeepEqual(c, st.dns) {
			res.DNSConfig, st.dns = c, c
		}
	}
	st.index = now
	if res.Node == nil && res.PeersChanged == nil && res.PeersRemoved == nil && res.UserProfiles == nil && res.PacketFilter == nil && res.DERPMap == nil && res.DNSConfig == nil {
		return nil, true
	}
	t := time.Now()
	res.ControlTime = &t
	return res, true
}

// toldAll is the set of every node but self in nodes (which are all the nodes there are): what a
// node was told of before a policy limited it.
func toldAll(nodes []*fsm.Node, selfID string) map[string]bool {
	all := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		if n.ID != selfID && n.NodeKey != "" {
			all[n.ID] = true
		}
	}
	return all
}

// noDERP is the DERP map without relays (direct paths only).
var noDERP = &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{}}

// derpMap is the DERP map to send; its pointer changes only when the map does.
func (s *Server) derpMap() *tailcfg.DERPMap {
	if s.DERPMap != nil {
		if d := s.DERPMap(); d != nil {
			return d
		}
	}
	return noDERP
}

// waitChange waits for the nodes table to change, sending keep-alives meanwhile. It reports
// false when the stream ended.
func (s *Server) waitChange(ctx context.Context, w http.ResponseWriter, compress bool, store *fsm.Store, index uint64) bool {
	for {
		wctx, cancel := context.WithTimeout(ctx, keepAlive)
		now := store.WaitIndex(wctx, index, watched...)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if now > index {
			return true
		}
		if send(w, compress, &tailcfg.MapResponse{KeepAlive: true}) != nil {
			return false
		}
	}
}

// update records what the node reports of itself, when it changed.
func (s *Server) update(ctx context.Context, self *fsm.Node, req *tailcfg.MapRequest) error {
	u := fsm.NodeUpdate{NodeKey: self.NodeKey, DiscoKey: req.DiscoKey.String(), OS: self.OS, HomeDERP: self.HomeDERP}
	for _, ep := range req.Endpoints {
		if s := ep.String(); len(s) <= fsm.MaxEndpoint && len(u.Endpoints) < fsm.MaxEndpoints {
			u.Endpoints = append(u.Endpoints, s) // the first ones: clients list the best first
		}
	}
	if req.Hostinfo != nil {
		if req.Hostinfo.OS != "" {
			u.OS = truncate(req.Hostinfo.OS, fsm.MaxOS)
		}
		if req.Hostinfo.NetInfo != nil && req.Hostinfo.NetInfo.PreferredDERP != 0 {
			u.HomeDERP = req.Hostinfo.NetInfo.PreferredDERP
		}
	}
	if req.DiscoKey.IsZero() {
		u.DiscoKey = self.DiscoKey
	}
	if u.DiscoKey == self.DiscoKey && slices.Equal(u.Endpoints, self.Endpoints) && u.OS == self.OS && u.HomeDERP == self.HomeDERP {
		return nil
	}
	return s.apply(ctx, "node.update", "node:"+self.Name, "", u)
}

// send writes one map message: a little-endian length, then JSON, zstd-compressed if asked.
func send(w http.ResponseWriter, compress bool, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if compress {
		b = zstdframe.AppendEncode(nil, b, zstdframe.FastestCompression)
	}
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(b)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

// mapResponse is the whole network map as node nodeKey sees it; st becomes what the node
// was told, for the deltas that follow.
func (s *Server) mapResponse(store *fsm.Store, nodeKey string, st *streamState) *tailcfg.MapResponse {
	var self *fsm.Node
	nodes := store.Nodes("")
	for _, n := range nodes {
		if n.NodeKey == nodeKey {
			self = n
		}
	}
	if self == nil {
		return nil
	}
	rules, gen := s.filter(store, nodes)
	*st = streamState{index: tablesIndex(store), dnsAt: dnsKeyOf(store), filter: gen,
		policy: store.Policy().Version, derp: s.derpMap()}
	st.vis = s.visibilityOf(store, self, rules)
	st.dns = s.dnsConfig(store, st.vis)
	if st.vis.limited {
		st.peers = map[string]bool{}
	}
	now := time.Now()
	res := &tailcfg.MapResponse{
		Node:         s.tailNode(store, self),
		DERPMap:      st.derp,
		Domain:       s.domain(),
		PacketFilter: rules,
		DNSConfig:    st.dns,
		ControlTime:  &now,
	}
	users := map[string]bool{self.UserID: true}
	for _, n := range nodes {
		if n.ID == self.ID || n.NodeKey == "" || st.vis.limited && !st.vis.sees(nodeAddrs(store, n)) {
			continue
		}
		res.Peers = append(res.Peers, s.tailNode(store, n))
		if st.peers != nil {
			st.peers[n.ID] = true
		}
		users[n.UserID] = true
	}
	res.UserProfiles = userProfiles(store, users)
	return res
}

// userProfiles are the profiles of the users with the given IDs.
func userProfiles(store *fsm.Store, ids map[string]bool) []tailcfg.UserProfile {
	var out []tailcfg.UserProfile
	for id := range ids {
		if u := store.User(id); u != nil {
			out = append(out, tailcfg.UserProfile{ID: userID(u.ID), LoginName: u.Name, DisplayName: u.Name})
		}
	}
	return out
}

// filterKey is the state a packet filter is compiled from: the policy, the nodes it names
// (and whose addresses include the services they host), the workspaces (connected to
// environments) and the users (admins reach every environment).
type filterKey struct{ policy, nodes, workspaces, users uint64 }

// filter is the packet filter every node enforces: the policy's acls, or everything while no
// policy is set; either way no "*" reaches an environment's services, which only their own
// environment, its connected workspaces and the machines of its owner and of the admins
// reach; an intercepted service reaches its workspace's port. A policy that does not compile (it was checked when set) fails closed. It is
// compiled once per change of what it is made from, not once per map stream; gen changes
// only when the rules do. nodes, when not nil, are the store's nodes (saving a second read).
func (s *Server) filter(store *fsm.Store, nodes []*fsm.Node) (rules []tailcfg.FilterRule, gen uint64) {
	pol := store.Policy()
	key := filterKey{pol.Version, store.TableIndex(fsm.TableNodes), store.TableIndex(fsm.TableWorkspaces), store.TableIndex(fsm.TableUsers)}
	s.filterMu.Lock()
	defer s.filterMu.Unlock()
	if s.compiled != nil && s.filterAt == key {
		return s.compiled, s.filterGen
	}
	if nodes == nil {
		nodes = store.Nodes("")
	}
	rules = s.compile(store, pol, nodes)
	if s.compiled == nil || !reflect.DeepEqual(rules, s.compiled) {
		s.filterGen++
	}
	s.compiled, s.filterAt = rules, key
	return s.compiled, s.filterGen
}

// compile turns the policy's acls (AllowAll without one) into a packet filter for the current
// nodes, isolating the environments. A policy that does not compile drops everything.
func (s *Server) compile(store *fsm.Store, pol fsm.Policy, nodes []*fsm.Node) []tailcfg.FilterRule {
	var p *policy.Policy
	if pol.Version != 0 && pol.Text != "" {
		var err error
		if p, err = policy.Parse([]byte(pol.Text)); err != nil {
			s.logf("control: policy version %d: %v; dropping all mesh traffic until it is fixed", pol.Version, err)
			return []tailcfg.FilterRule{}
		}
	}
	rules, err := compileRules(store, p, nodes)
	if err != nil {
		s.logf("control: policy version %d: %v; dropping all mesh traffic until it is fixed", pol.Version, err)
		return []tailcfg.FilterRule{}
	}
	return rules
}

// tailNode is a node as the protocol describes it. The addresses of a machine's workspaces
// and environment services are among its AllowedIPs (and primary routes): peers send their
// packets to it over WireGuard.
func (s *Server) tailNode(store *fsm.Store, n *fsm.Node) *tailcfg.Node {
	t := &tailcfg.Node{
		ID:                nodeID(n.ID),
		StableID:          tailcfg.StableNodeID(n.ID),
		Name:              n.Name + "." + s.domain() + ".",
		User:              userID(n.UserID),
		Tags:              n.Tags,
		HomeDERP:          n.HomeDERP,
		Created:           n.CreatedAt,
		MachineAuthorized: true,
		Hostinfo:          (&tailcfg.Hostinfo{Hostname: n.Name, OS: n.OS}).View(),
	}
	t.Key.UnmarshalText([]byte(n.NodeKey))
	t.Machine.UnmarshalText([]byte(n.MachineKey))
	if n.DiscoKey != "" {
		t.DiscoKey.UnmarshalText([]byte(n.DiscoKey))
	}
	t.Addresses = hostPrefixes(n.IPv4, n.IPv6)
	t.AllowedIPs = slices.Clone(t.Addresses)
	t.PrimaryRoutes = routedBy(store, n)
	t.AllowedIPs = append(t.AllowedIPs, t.PrimaryRoutes...)
	for _, ep := range n.Endpoints {
		if ap, err := netip.ParseAddrPort(ep); err == nil {
			t.Endpoints = append(t.Endpoints, ap)
		}
	}
	online := n.Online
	t.Online = &online
	if !n.LastSeen.IsZero() {
		t.LastSeen = &n.LastSeen
	}
	return t
}

// routedBy are the addresses node n routes for: its workspaces' and its environments'
// services'.
func routedBy(store *fsm.Store, n *fsm.Node) []netip.Prefix {
	var out []netip.Prefix
	for _, w := range store.WorkspacesOn(n.Name) {
		out = append(out, hostPrefixes(w.IPv4, w.IPv6)...)
	}
	for _, e := range store.EnvironmentsOn(n.Name) {
		for _, svc := range e.Services {
			out = append(out, hostPrefixes(svc.IPv4, svc.IPv6)...)
		}
	}
	return out
}

// hostPrefixes makes a single-address prefix of each address that parses.
func hostPrefixes(addrs ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range addrs {
		if ip, err := netip.ParseAddr(a); err == nil {
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	return out
}
