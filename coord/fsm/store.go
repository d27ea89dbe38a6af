package fsm

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"sync"

	"github.com/hashicorp/go-memdb"
)

// Table names.
const (
	tUsers      = "users"
	tAPIKeys    = "apikeys"
	tAuthKeys   = "authkeys"
	tNodes      = "nodes"
	tWorkspaces = "workspaces"
	tEnvs       = "environments"
	tIntercepts = "intercepts"
	tPolicy     = "policy"
	tAudit      = "audit"
	tIdem       = "idempotency"
	tIndex      = "index"
	tAddrs      = "addrs"
	tGone       = "nodes_gone"
	tMeta       = "meta"
	tRecordings = "recordings"
	tExits      = "exits"
)

func str(field string) *stringField { return &stringField{name: field} }

// stringField indexes a string field as memdb's StringFieldIndex does, but finds the field
// by name once per type, not at every insert (FieldByName was a tenth of an apply).
type stringField struct {
	name  string
	paths sync.Map // reflect.Type → the field's index path
}

func (s *stringField) FromObject(obj any) (bool, []byte, error) {
	val, err := s.value(obj)
	if err != nil || val == "" {
		return false, nil, err
	}
	return true, append([]byte(val), 0), nil
}

// value is obj's value of the field ("": none).
func (s *stringField) value(obj any) (string, error) {
	v := reflect.Indirect(reflect.ValueOf(obj))
	path, ok := s.paths.Load(v.Type())
	if !ok {
		f, found := v.Type().FieldByName(s.name)
		if !found || f.Type.Kind() != reflect.String {
			return "", fmt.Errorf("%s has no string field %s to index", v.Type(), s.name)
		}
		path = f.Index
		s.paths.Store(v.Type(), path)
	}
	return v.FieldByIndex(path.([]int)).String(), nil
}

func (s *stringField) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("index %s: want one argument, got %d", s.name, len(args))
	}
	arg, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("index %s: argument must be a string: %#v", s.name, args[0])
	}
	return append([]byte(arg), 0), nil
}

func byID() *memdb.IndexSchema {
	return &memdb.IndexSchema{Name: "id", Unique: true, Indexer: str("ID")}
}

func byName() *memdb.IndexSchema {
	return &memdb.IndexSchema{Name: "name", Unique: true, Indexer: str("Name")}
}

func by(name, field string) *memdb.IndexSchema {
	return &memdb.IndexSchema{Name: name, Indexer: str(field), AllowMissing: true}
}

func table(name string, idx ...*memdb.IndexSchema) *memdb.TableSchema {
	t := &memdb.TableSchema{Name: name, Indexes: map[string]*memdb.IndexSchema{}}
	for _, i := range idx {
		t.Indexes[i.Name] = i
	}
	return t
}

// uniqueStrings lists each table's unique string indexes: what get reads.
var uniqueStrings = func() map[string][]namedField {
	out := map[string][]namedField{}
	for name, t := range schema.Tables {
		for iname, idx := range t.Indexes {
			if f, ok := idx.Indexer.(*stringField); ok && idx.Unique {
				out[name] = append(out[name], namedField{iname, f})
			}
		}
	}
	return out
}()

type namedField struct {
	index string
	field *stringField
}

var schema = &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
	tUsers:    table(tUsers, byID(), byName()),
	tAPIKeys:  table(tAPIKeys, byID(), by("user", "UserID")),
	tAuthKeys: table(tAuthKeys, byID(), by("user", "UserID")),
	tNodes: table(tNodes, byID(), byName(), by("user", "UserID"),
		&memdb.IndexSchema{Name: "machine", Unique: true, Indexer: str("MachineKey"), AllowMissing: true},
		&memdb.IndexSchema{Name: "nodekey", Unique: true, Indexer: str("NodeKey"), AllowMissing: true},
		&memdb.IndexSchema{Name: "modify", Indexer: &memdb.UintFieldIndex{Field: "ModifyIndex"}}),
	tGone:       table(tGone, byID(), &memdb.IndexSchema{Name: "index", Indexer: &memdb.UintFieldIndex{Field: "Index"}}),
	tWorkspaces: table(tWorkspaces, byID(), byName(), by("owner", "OwnerID"), by("machine", "Machine"), by("env", "Env"), by("exit", "Exit")),
	tEnvs:       table(tEnvs, byID(), byName(), by("owner", "OwnerID"), by("machine", "Machine")),
	tIntercepts: table(tIntercepts, byID(), &memdb.IndexSchema{Name: "name", Unique: true, Indexer: str("Name"), AllowMissing: true},
		&memdb.IndexSchema{Name: "slot", Unique: true, Indexer: str("Slot"), AllowMissing: true},
		by("target", "Target"), by("env", "Env"), by("workspace", "Workspace"), by("owner", "OwnerID")),
	tPolicy: table(tPolicy, byID()),
	tIndex:  table(tIndex, &memdb.IndexSchema{Name: "id", Unique: true, Indexer: str("Table")}),
	tAddrs:  table(tAddrs, &memdb.IndexSchema{Name: "id", Unique: true, Indexer: str("Addr")}),
	tMeta:   table(tMeta, &memdb.IndexSchema{Name: "id", Unique: true, Indexer: str("Key")}),
	tExits:  table(tExits, &memdb.IndexSchema{Name: "id", Unique: true, Indexer: str("Name")}, by("node", "Node")),
	tRecordings: table(tRecordings, byID(), by("workspace", "WorkspaceID"),
		&memdb.IndexSchema{Name: "seq", Indexer: &memdb.UintFieldIndex{Field: "Seq"}}),
}}

// dataTables are the tables a snapshot carries, in the order it writes them. All but audit
// and idempotency (the history) are memdb tables.
var dataTables = []string{tUsers, tAPIKeys, tAuthKeys, tNodes, tWorkspaces, tEnvs, tIntercepts, tPolicy, tAudit, tIdem, tAddrs, tMeta, tGone, tRecordings, tExits, tIndex}

func inMemdb(table string) bool { return table != tAudit && table != tIdem }

// idemEntry remembers a command's result under its idempotency key, so a retry of a write
// whose answer was lost gets the same answer instead of a second change.
type idemEntry struct {
	Key    string `json:"key"`
	Index  uint64 `json:"index"`
	Result Result `json:"result"`
}

// addrLease records who holds a mesh IPv4 address (its IPv6 twin goes with it).
type addrLease struct {
	Addr  string `json:"addr"`
	Owner string `json:"owner"` // "node/NAME", "workspace/NAME", "service/ENV/NAME"
}

// metaRow is a cluster-wide setting: "ula" (the IPv6 /48), "next-addr" (where the address
// search resumes), "restored" (the log index of the last backup restore).
type metaRow struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// tableIndex is the Raft index of the last change to a table (for blocking queries).
type tableIndex struct {
	Table string `json:"table"`
	Index uint64 `json:"index"`
}

// Tables whose change index callers can wait on (WaitIndex).
const (
	TableNodes        = tNodes
	TableUsers        = tUsers
	TableWorkspaces   = tWorkspaces
	TableEnvironments = tEnvs
	TableIntercepts   = tIntercepts
	TablePolicy       = tPolicy
	TableExits        = tExits
)

// Store is the state as readers see it. Each read method sees one consistent moment.
type Store struct {
	mu       sync.RWMutex // guards db, hist and replaced
	db       *memdb.MemDB
	hist     history       // as of db's last commit
	replaced chan struct{} // closed when db is swapped for a restored one
}

func newStore() *Store {
	return &Store{db: newDB(), replaced: make(chan struct{})}
}

func newDB() *memdb.MemDB {
	db, err := memdb.NewMemDB(schema)
	if err != nil {
		panic(err) // the schema is static: a bad one is a programming error
	}
	return db
}

// swap replaces the state (a restored snapshot) and wakes every waiter. Callers hold mu.
func (s *Store) swap(db *memdb.MemDB, hist history) {
	s.db, s.hist = db, hist
	close(s.replaced)
	s.replaced = make(chan struct{})
}

// WaitIndex blocks until the change index of any of tables passes after, or ctx ends, and
// returns the highest of their indexes then: the blocking query behind "wake me when
// workspaces change".
func (s *Store) WaitIndex(ctx context.Context, after uint64, tables ...string) uint64 {
	for {
		s.mu.RLock()
		txn, replaced := s.db.Txn(false), s.replaced
		s.mu.RUnlock()
		ws := memdb.NewWatchSet()
		var idx uint64
		for _, table := range tables {
			ch, v, err := txn.FirstWatch(tIndex, "id", table)
			if err != nil {
				return idx
			}
			ws.Add(ch)
			if v != nil {
				idx = max(idx, v.(*tableIndex).Index)
			}
		}
		if idx > after {
			return idx
		}
		ws.Add(replaced)
		if ws.WatchCtx(ctx) != nil {
			return idx
		}
	}
}

// read returns a read transaction on the current state.
func (s *Store) read() *memdb.Txn {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Txn(false)
}

// view returns the current state whole: a read transaction and the history with it.
func (s *Store) view() (*memdb.Txn, history) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Txn(false), s.hist
}

// current is the database, for the FSM's write transaction.
func (s *Store) current() *memdb.MemDB {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db
}

// commit makes a batch's writes visible: txn's and the history's at one moment.
func (s *Store) commit(txn *memdb.Txn, hist history) {
	s.mu.Lock()
	defer s.mu.Unlock()
	txn.Commit()
	s.hist = hist
}

func first[T any](txn *memdb.Txn, tbl, index string, args ...any) *T {
	v, err := txn.First(tbl, index, args...)
	if err != nil || v == nil {
		return nil
	}
	return v.(*T)
}

func all[T any](txn *memdb.Txn, tbl, index string, args ...any) []*T {
	it, err := txn.Get(tbl, index, args...)
	if err != nil {
		return nil
	}
	var out []*T
	for v := it.Next(); v != nil; v = it.Next() {
		out = append(out, v.(*T))
	}
	return out
}

// Users lists every user by ID.
func (s *Store) Users() []*User { return all[User](s.read(), tUsers, "id") }

// User finds a user by ID.
func (s *Store) User(id string) *User { return first[User](s.read(), tUsers, "id", id) }

// UserByName finds a user by name.
func (s *Store) UserByName(name string) *User { return first[User](s.read(), tUsers, "name", name) }

// APIKey finds an API key by ID.
func (s *Store) APIKey(id string) *APIKey { return first[APIKey](s.read(), tAPIKeys, "id", id) }

// APIKeys lists API keys, of one user or ("") of all.
func (s *Store) APIKeys(userID string) []*APIKey { return listBy[APIKey](s, tAPIKeys, "user", userID) }

// AuthKey finds an auth key by ID.
func (s *Store) AuthKey(id string) *AuthKey { return first[AuthKey](s.read(), tAuthKeys, "id", id) }

// AuthKeys lists auth keys, of one user or ("") of all.
func (s *Store) AuthKeys(userID string) []*AuthKey {
	return listBy[AuthKey](s, tAuthKeys, "user", userID)
}

// Nodes lists nodes, of one user or ("") of all.
func (s *Store) Nodes(userID string) []*Node { return listBy[Node](s, tNodes, "user", userID) }

// Node finds a node by name.
func (s *Store) Node(name string) *Node { return first[Node](s.read(), tNodes, "name", name) }

// NodeByID finds a node by its ID.
func (s *Store) NodeByID(id string) *Node { return first[Node](s.read(), tNodes, "id", id) }

// NodeByKey finds a node by its node key (nodekey:…).
func (s *Store) NodeByKey(k string) *Node { return first[Node](s.read(), tNodes, "nodekey", k) }

// NodeByMachine finds a node by its machine key (mkey:…).
func (s *Store) NodeByMachine(k string) *Node {
	return first[Node](s.read(), tNodes, "machine", k)
}

// NodesChangedSince lists the nodes changed after index idx, in the order they changed.
func (s *Store) NodesChangedSince(idx uint64) []*Node {
	return since[Node](s.read(), tNodes, "modify", idx, -1)
}

// NodesGoneSince lists the IDs of nodes deleted after index idx.
func (s *Store) NodesGoneSince(idx uint64) []string {
	var ids []string
	for _, g := range since[NodeGone](s.read(), tGone, "index", idx, -1) {
		ids = append(ids, g.ID)
	}
	return ids
}

// since lists up to limit (-1: all) rows of tbl whose uint index is past idx, in index order.
func since[T any](txn *memdb.Txn, tbl, index string, idx uint64, limit int) []*T {
	it, err := txn.LowerBound(tbl, index, idx+1)
	if err != nil {
		return nil
	}
	var out []*T
	for v := it.Next(); v != nil && len(out) != limit; v = it.Next() {
		out = append(out, v.(*T))
	}
	return out
}

// Workspaces lists workspaces, of one owner or ("") of all.
func (s *Store) Workspaces(ownerID string) []*Workspace {
	return listBy[Workspace](s, tWorkspaces, "owner", ownerID)
}

// WorkspacesOn lists the workspaces wanted on one machine.
func (s *Store) WorkspacesOn(machine string) []*Workspace {
	return all[Workspace](s.read(), tWorkspaces, "machine", machine)
}

// Recordings lists SSH session recordings, of the workspace with ID wsID or ("") of all,
// oldest first.
func (s *Store) Recordings(wsID string) []*Recording {
	if wsID != "" {
		recs := all[Recording](s.read(), tRecordings, "workspace", wsID)
		slices.SortFunc(recs, func(a, b *Recording) int { return cmp.Compare(a.Seq, b.Seq) })
		return recs
	}
	return all[Recording](s.read(), tRecordings, "seq")
}

// Recording finds a recording by its session ID.
func (s *Store) Recording(id string) *Recording {
	return first[Recording](s.read(), tRecordings, "id", id)
}

// Workspace finds a workspace by name.
func (s *Store) Workspace(name string) *Workspace {
	return first[Workspace](s.read(), tWorkspaces, "name", name)
}

// Environments lists environments, of one owner or ("") of all.
func (s *Store) Environments(ownerID string) []*Environment {
	return listBy[Environment](s, tEnvs, "owner", ownerID)
}

// WorkspacesConnected lists the workspaces connected to environment env.
func (s *Store) WorkspacesConnected(env string) []*Workspace {
	return all[Workspace](s.read(), tWorkspaces, "env", env)
}

// EnvironmentsOn lists the environments wanted on one machine.
func (s *Store) EnvironmentsOn(machine string) []*Environment {
	return all[Environment](s.read(), tEnvs, "machine", machine)
}

// Environment finds an environment by name.
func (s *Store) Environment(name string) *Environment {
	return first[Environment](s.read(), tEnvs, "name", name)
}

// Intercepts lists intercepts, of one owner or ("") of all.
func (s *Store) Intercepts(ownerID string) []*Intercept {
	return listBy[Intercept](s, tIntercepts, "owner", ownerID)
}

// Intercept finds an intercept by ID, or else by name.
func (s *Store) Intercept(ref string) *Intercept {
	txn := s.read()
	if ic := first[Intercept](txn, tIntercepts, "id", ref); ic != nil {
		return ic
	}
	return first[Intercept](txn, tIntercepts, "name", ref)
}

// InterceptsTo lists the intercepts that send traffic to workspace ws.
func (s *Store) InterceptsTo(ws string) []*Intercept {
	return all[Intercept](s.read(), tIntercepts, "workspace", ws)
}

// InterceptsOf lists the intercepts of environment env's services.
func (s *Store) InterceptsOf(env string) []*Intercept {
	return all[Intercept](s.read(), tIntercepts, "env", env)
}

// ULA is the cluster's IPv6 /48 (invalid until the cluster is initialized).
func (s *Store) ULA() netip.Prefix {
	p, _ := netip.ParsePrefix(meta(s.read(), "ula"))
	return p
}

func meta(txn *memdb.Txn, key string) string {
	if m := first[metaRow](txn, tMeta, "id", key); m != nil {
		return m.Value
	}
	return ""
}

// RestoredAt is the log index of the last restore of a backup (0: none). What a reader
// knew of the state before it cannot be brought up to date with changes since: the
// restore replaced the state whole.
func (s *Store) RestoredAt() uint64 {
	n, _ := strconv.ParseUint(meta(s.read(), "restored"), 10, 64)
	return n
}

// policyRow holds the one policy.
type policyRow struct {
	ID     string `json:"id"` // always "policy"
	Policy Policy `json:"policy"`
}

// Policy is the policy in force (version 0: none set).
func (s *Store) Policy() Policy {
	if p := first[policyRow](s.read(), tPolicy, "id", "policy"); p != nil {
		return p.Policy
	}
	return Policy{}
}

// Audit lists up to limit events with Seq > seq, oldest first.
func (s *Store) Audit(seq uint64, limit int) []*AuditEvent {
	_, hist := s.view()
	return hist.auditSince(seq, limit)
}

// TableIndex is the Raft index of the last change to table.
func (s *Store) TableIndex(table string) uint64 {
	if ti := first[tableIndex](s.read(), tIndex, "id", table); ti != nil {
		return ti.Index
	}
	return 0
}

func listBy[T any](s *Store, tbl, index, key string) []*T {
	if key == "" {
		return all[T](s.read(), tbl, "id")
	}
	return all[T](s.read(), tbl, index, key)
}
