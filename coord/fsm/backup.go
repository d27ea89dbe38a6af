package fsm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/hashicorp/go-memdb"

	"meshwork.dev/policy"
)

// Backup is a backup (as WriteSnapshot makes it) whose every record passed the checks the
// ops make on what they create. Make it with ParseBackup.
type Backup struct {
	tables map[string][]any // records by table, in the backup's order
}

// ParseBackup reads a backup and checks every record as the ops check what they create —
// names, roles, tags, references to users, machines, environments and workspaces, unique
// IDs and names, at least one admin, a policy that parses — and refuses it whole, naming the
// first bad record, if any fails: a backup is a file anyone may have edited.
func ParseBackup(b []byte) (*Backup, error) {
	records, _, err := parseSnapshot(b)
	if err != nil {
		return nil, err
	}
	bk := &Backup{tables: map[string][]any{}}
	for _, r := range records {
		bk.tables[r.table] = append(bk.tables[r.table], r.obj)
	}
	if err := newBackupCheck(bk).run(records); err != nil {
		return nil, err
	}
	return bk, nil
}

// RestoreSnapshot makes the Raft snapshot that replaces the state with bk's at log index
// index: the backup's records; this store's own audit log with one more event, the restore
// (ev, at index); the backup's idempotency answers from before index (later ones come from
// another cluster's log and mean nothing here); "restored" = index and every table changed
// at index, so map streams and blocking queries start again whole. Called on the leader
// with every write applied and new ones held back, so the audit log is complete.
func (s *Store) RestoreSnapshot(bk *Backup, index uint64, ev AuditEvent) ([]byte, error) {
	_, hist := s.view()
	ev.Seq, ev.Action, ev.Object = index, "restore", "cluster/state"
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(header{Format: snapshotFormat, Version: 1, Index: index}); err != nil {
		return nil, err
	}
	for _, tbl := range dataTables {
		for _, row := range bk.restoredRows(tbl, hist, index, &ev) {
			o, err := json.Marshal(row)
			if err != nil {
				return nil, err
			}
			if err := enc.Encode(line{T: tbl, O: o}); err != nil {
				return nil, err
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// restoredRows are the rows of tbl in the snapshot RestoreSnapshot makes.
func (bk *Backup) restoredRows(tbl string, hist history, index uint64, ev *AuditEvent) []any {
	var out []any
	switch tbl {
	case tAudit:
		for _, e := range hist.audit {
			out = append(out, e)
		}
		return append(out, ev)
	case tIdem:
		for _, r := range bk.tables[tIdem] {
			if r.(*idemEntry).Index <= index {
				out = append(out, r)
			}
		}
		return out
	case tMeta:
		for _, r := range bk.tables[tMeta] {
			if r.(*metaRow).Key != "restored" {
				out = append(out, r)
			}
		}
		return append(out, &metaRow{Key: "restored", Value: strconv.FormatUint(index, 10)})
	case tIndex:
		for _, t := range dataTables[:len(dataTables)-1] {
			out = append(out, &tableIndex{Table: t, Index: index})
		}
		return out
	}
	return bk.tables[tbl]
}

// backupCheck checks a backup's records against each other.
type backupCheck struct {
	users      map[string]*User        // by ID
	nodes      map[string]bool         // by name
	workspaces map[string]bool         // by name
	envs       map[string]*Environment // by name
	leases     map[string]string       // address lease owners by IPv4
	seen       map[string]bool         // "table\x00index\x00value" of unique indexes
	modes      map[string]string       // intercept modes by target ("env/service:port")
	exits      map[string]bool         // by name
}

func newBackupCheck(bk *Backup) *backupCheck {
	c := &backupCheck{users: map[string]*User{}, nodes: map[string]bool{}, workspaces: map[string]bool{},
		envs: map[string]*Environment{}, leases: map[string]string{}, seen: map[string]bool{}, exits: map[string]bool{}}
	for _, r := range bk.tables[tExits] {
		c.exits[r.(*Exit).Name] = true
	}
	for _, r := range bk.tables[tAddrs] {
		c.leases[r.(*addrLease).Addr] = r.(*addrLease).Owner
	}
	for _, r := range bk.tables[tUsers] {
		c.users[r.(*User).ID] = r.(*User)
	}
	for _, r := range bk.tables[tNodes] {
		c.nodes[r.(*Node).Name] = true
	}
	for _, r := range bk.tables[tWorkspaces] {
		c.workspaces[r.(*Workspace).Name] = true
	}
	for _, r := range bk.tables[tEnvs] {
		c.envs[r.(*Environment).Name] = r.(*Environment)
	}
	return c
}

// run checks every record, in the backup's order (a record is on line i+2: the header is
// line 1), and then that an admin is left to manage the cluster.
func (c *backupCheck) run(records []record) error {
	for i, r := range records {
		err := c.unique(r)
		if err == nil {
			err = c.record(r.obj)
		}
		if err != nil {
			return errorf(CodeInvalid, "backup line %d (%s): %v; the state is unchanged", i+2, r.table, err)
		}
	}
	for _, u := range c.users {
		if u.Role == RoleAdmin {
			return nil
		}
	}
	return errorf(CodeInvalid, "backup has no admin user: nobody could manage the cluster after restoring it; the state is unchanged")
}

// unique checks what memdb would not: that required index values are present (its Insert
// fails, and a replica installing the snapshot would stop) and unique ones not repeated (its
// Insert keeps the last silently).
func (c *backupCheck) unique(r record) error {
	if !inMemdb(r.table) {
		return nil
	}
	for name, idx := range schema.Tables[r.table].Indexes {
		ix, ok := idx.Indexer.(memdb.SingleIndexer)
		if !ok {
			continue
		}
		found, val, err := ix.FromObject(r.obj)
		switch {
		case err != nil:
			return err
		case !found && !idx.AllowMissing:
			return fmt.Errorf("no %s", name)
		case found && idx.Unique:
			k := r.table + "\x00" + name + "\x00" + string(val)
			if c.seen[k] {
				return fmt.Errorf("a second row with %s %q", name, bytes.TrimRight(val, "\x00"))
			}
			c.seen[k] = true
		}
	}
	return nil
}

// record checks one record as the op that creates it would.
func (c *backupCheck) record(obj any) error {
	switch o := obj.(type) {
	case *User:
		if o.Role != RoleAdmin && o.Role != RoleMember {
			return fmt.Errorf("user %q: role %q: use admin or member", o.Name, o.Role)
		}
		return ValidName("user", o.Name)
	case *APIKey:
		return c.key("API key", o.ID, o.Hash, o.UserID, nil)
	case *AuthKey:
		return c.key("auth key", o.ID, o.Hash, o.UserID, o.Tags)
	case *Node:
		return c.node(o)
	case *Workspace:
		return c.workspace(o)
	case *Environment:
		return c.environment(o)
	case *Intercept:
		return c.intercept(o)
	case *Exit:
		return c.exit(o)
	case *policyRow:
		if _, err := policy.Parse([]byte(o.Policy.Text)); err != nil {
			return fmt.Errorf("policy: %v", err)
		}
	}
	return nil
}

func (c *backupCheck) key(kind, id, hash, userID string, tags []string) error {
	if hash == "" {
		return fmt.Errorf("%s %s has no hash", kind, id)
	}
	if c.users[userID] == nil {
		return fmt.Errorf("%s %s: no user with ID %q", kind, id, userID)
	}
	return validTags(tags)
}

func validTags(tags []string) error {
	for _, tag := range tags {
		if err := validTag(tag); err != nil {
			return err
		}
	}
	return nil
}

func (c *backupCheck) node(n *Node) error {
	if err := ValidName("node", n.Name); err != nil {
		return err
	}
	if c.workspaces[n.Name] {
		return fmt.Errorf("node %q: a workspace has the same name (they share the mesh's DNS names)", n.Name)
	}
	if c.users[n.UserID] == nil {
		return fmt.Errorf("node %q: no user with ID %q", n.Name, n.UserID)
	}
	return validTags(n.Tags)
}

func (c *backupCheck) workspace(w *Workspace) error {
	if err := ValidName("workspace", w.Name); err != nil {
		return err
	}
	switch {
	case c.users[w.OwnerID] == nil:
		return fmt.Errorf("workspace %q: no user with ID %q", w.Name, w.OwnerID)
	case !c.nodes[w.Machine]:
		return fmt.Errorf("workspace %q: no machine %q", w.Name, w.Machine)
	case w.Env != "" && c.envs[w.Env] == nil:
		return fmt.Errorf("workspace %q: no environment %q", w.Name, w.Env)
	case w.Exit != "" && !c.exits[w.Exit]:
		return fmt.Errorf("workspace %q: no exit %q", w.Name, w.Exit)
	case w.Image == "":
		return fmt.Errorf("workspace %q: no image", w.Name)
	case w.CPU < 0 || w.MemoryBytes < 0:
		return fmt.Errorf("workspace %q: negative CPU or memory limit", w.Name)
	case w.Desired != Running && w.Desired != Stopped:
		return fmt.Errorf("workspace %q: state %q: use running or stopped", w.Name, w.Desired)
	}
	return nil
}

func (c *backupCheck) environment(e *Environment) error {
	if err := ValidName("environment", e.Name); err != nil {
		return err
	}
	switch {
	case c.users[e.OwnerID] == nil:
		return fmt.Errorf("environment %q: no user with ID %q", e.Name, e.OwnerID)
	case !c.nodes[e.Machine]:
		return fmt.Errorf("environment %q: no machine %q", e.Name, e.Machine)
	case len(e.Services) == 0:
		return fmt.Errorf("environment %q has no services", e.Name)
	case e.Desired != Running && e.Desired != Stopped:
		return fmt.Errorf("environment %q: state %q: use running or stopped", e.Name, e.Desired)
	}
	if err := checkServices(e.Name, e.Services); err != nil {
		return err
	}
	for _, s := range e.Services {
		if s.IPv4 == "" && s.IPv6 == "" {
			continue // from before services had addresses: it gets them at its next update
		}
		if c.leases[s.IPv4] != serviceOwner(e.Name, s.Name) {
			return fmt.Errorf("environment %q: service %q: address %q is not leased to it", e.Name, s.Name, s.IPv4)
		}
	}
	return nil
}

func (c *backupCheck) intercept(ic *Intercept) error {
	e := c.envs[ic.Env]
	switch {
	case e == nil:
		return fmt.Errorf("intercept %s: no environment %q", ic.ID, ic.Env)
	case findService(e, ic.Service) == nil:
		return fmt.Errorf("intercept %s: environment %q has no service %q", ic.ID, ic.Env, ic.Service)
	case !c.workspaces[ic.Workspace]:
		return fmt.Errorf("intercept %s: no workspace %q", ic.ID, ic.Workspace)
	case c.users[ic.OwnerID] == nil:
		return fmt.Errorf("intercept %s: no user with ID %q", ic.ID, ic.OwnerID)
	}
	if err := firstErr(validPort("port", ic.Port), validPort("workspace port", ic.WorkspacePort), c.interceptShape(ic)); err != nil {
		return fmt.Errorf("intercept %s: %v", ic.ID, err)
	}
	return nil
}

// interceptShape checks an intercept's name and headers as intercept.create leaves them,
// and that no global intercept shares its port with another.
func (c *backupCheck) interceptShape(ic *Intercept) error {
	if ic.Name != "" {
		if err := ValidName("intercept", ic.Name); err != nil {
			return err
		}
	}
	hs, err := CanonicalHeaders(ic.Headers)
	switch {
	case err != nil:
		return err
	case !slices.Equal(hs, ic.Headers):
		return fmt.Errorf("headers not in canonical form")
	case ic.Slot != "" && ic.Slot != ic.slot():
		return fmt.Errorf("slot %q does not match its target and headers", ic.Slot)
	}
	if c.modes == nil {
		c.modes = map[string]string{}
	}
	target := fmt.Sprintf("%s/%s:%d", ic.Env, ic.Service, ic.Port)
	if m, ok := c.modes[target]; ok && (m == InterceptGlobal || ic.Mode() == InterceptGlobal) {
		return fmt.Errorf("a global intercept shares %s with another", target)
	}
	c.modes[target] = ic.Mode()
	return nil
}
