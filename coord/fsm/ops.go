package fsm

import (
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ops is every command this build understands.
var ops = map[string]op{
	"user.create":        {1, userCreate},
	"user.delete":        {1, userDelete},
	"apikey.create":      {1, apikeyCreate},
	"apikey.revoke":      {1, apikeyRevoke},
	"authkey.create":     {1, authkeyCreate},
	"authkey.revoke":     {1, authkeyRevoke},
	"node.register":      {1, nodeRegister},
	"node.delete":        {1, nodeDelete},
	"node.tag":           {1, nodeTag},
	"node.online":        {1, nodeOnline},
	"node.streams-ended": {1, nodeStreamsEnded},
	"workspace.create":   {1, workspaceCreate},
	"workspace.set":      {1, workspaceSet},
	"workspace.delete":   {1, workspaceDelete},
	"workspace.connect":  {1, workspaceConnect},
	"workspace.status":   {1, workspaceStatus},
	"workspace.exit":     {1, workspaceExit},
	"exit.create":        {1, exitCreate},
	"exit.delete":        {1, exitDelete},
	"ssh.start":          {1, sshStart},
	"ssh.end":            {1, sshEnd},
	"ssh.block":          {1, sshBlock},
	"environment.create": {1, environmentCreate},
	"environment.set":    {1, environmentSet},
	"environment.delete": {1, environmentDelete},
	"environment.update": {1, environmentUpdate},
	"environment.status": {1, environmentStatus},
	"intercept.create":   {1, interceptCreate},
	"intercept.delete":   {1, interceptDelete},
	"intercept.status":   {1, interceptStatus},
	"policy.set":         {1, policySet},
	"cluster.init":       {1, clusterInit},
	"node.join":          {1, nodeJoin},
	"node.update":        {1, nodeUpdate},
	"restore":            {1, restore},
	"login.fail":         {1, loginFail},
}

// ByName names the object of a delete or a change.
type ByName struct {
	Name string `json:"name"`
}

// ByID names a key to revoke.
type ByID struct {
	ID string `json:"id"`
}

func userCreate(t *tx) (any, string, error) {
	var u User
	if err := t.decode(&u); err != nil {
		return nil, "", err
	}
	if err := ValidName("user", u.Name); err != nil {
		return nil, "", err
	}
	if u.Role != RoleAdmin && u.Role != RoleMember {
		return nil, "", errorf(CodeInvalid, "role %q: use admin or member", u.Role)
	}
	if get[User](t, tUsers, "name", u.Name) != nil {
		return nil, "", errorf(CodeConflict, "user %q already exists", u.Name)
	}
	if u.ID == "" || get[User](t, tUsers, "id", u.ID) != nil {
		return nil, "", errorf(CodeInvalid, "user %q: missing or duplicate ID", u.Name)
	}
	u.CreatedAt = t.c.Time
	t.add(tUsers, &u)
	return &u, "user/" + u.Name, nil
}

func userDelete(t *tx) (any, string, error) {
	var req ByName
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	u := get[User](t, tUsers, "name", req.Name)
	if u == nil {
		return nil, "", errorf(CodeNotFound, "no user %q", req.Name)
	}
	if ws := all[Workspace](t.Txn, tWorkspaces, "owner", u.ID); len(ws) > 0 {
		return nil, "", errorf(CodeConflict, "user %q owns %d workspace(s), %s first: delete them before the user", u.Name, len(ws), ws[0].Name)
	}
	if envs := all[Environment](t.Txn, tEnvs, "owner", u.ID); len(envs) > 0 {
		return nil, "", errorf(CodeConflict, "user %q owns %d environment(s), %s first: delete them before the user", u.Name, len(envs), envs[0].Name)
	}
	if u.Role == RoleAdmin && countAdmins(t) == 1 {
		return nil, "", errorf(CodeConflict, "%q is the last admin; make another admin first", u.Name)
	}
	// Their machines leave the mesh with them, but for tagged ones: those belong to their tags.
	var machines []*Node
	for _, n := range all[Node](t.Txn, tNodes, "user", u.ID) {
		if len(n.Tags) == 0 {
			if err := hostsNothing(t, n); err != nil {
				return nil, "", err
			}
			machines = append(machines, n)
		}
	}
	for _, n := range machines {
		release(t, n.IPv4)
		t.del(tNodes, n)
	}
	endIntercepts(t, all[Intercept](t.Txn, tIntercepts, "owner", u.ID))
	for _, k := range all[APIKey](t.Txn, tAPIKeys, "user", u.ID) {
		t.del(tAPIKeys, k)
	}
	for _, k := range all[AuthKey](t.Txn, tAuthKeys, "user", u.ID) {
		t.del(tAuthKeys, k)
	}
	t.del(tUsers, u)
	return nil, "user/" + u.Name, nil
}

func countAdmins(t *tx) int {
	n := 0
	for _, u := range all[User](t.Txn, tUsers, "id") {
		if u.Role == RoleAdmin {
			n++
		}
	}
	return n
}

func apikeyCreate(t *tx) (any, string, error) {
	var k APIKey
	if err := t.decode(&k); err != nil {
		return nil, "", err
	}
	if get[User](t, tUsers, "id", k.UserID) == nil {
		return nil, "", errorf(CodeNotFound, "no user with ID %q", k.UserID)
	}
	if err := checkLen("an API key's name", k.Name, MaxKeyName); err != nil {
		return nil, "", err
	}
	if k.ID == "" || k.Hash == "" || get[APIKey](t, tAPIKeys, "id", k.ID) != nil {
		return nil, "", errorf(CodeInvalid, "API key: missing or duplicate ID, or no hash")
	}
	k.CreatedAt, k.RevokedAt = t.c.Time, nil
	t.add(tAPIKeys, &k)
	return &k, "apikey/" + k.ID, nil
}

func apikeyRevoke(t *tx) (any, string, error) {
	var req ByID
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	old := get[APIKey](t, tAPIKeys, "id", req.ID)
	if old == nil {
		return nil, "", errorf(CodeNotFound, "no API key %q", req.ID)
	}
	k := *old
	if k.RevokedAt == nil {
		k.RevokedAt = timePtr(t.c.Time)
		t.put(tAPIKeys, &k)
	}
	return &k, "apikey/" + k.ID, nil
}

func authkeyCreate(t *tx) (any, string, error) {
	var k AuthKey
	if err := t.decode(&k); err != nil {
		return nil, "", err
	}
	u := get[User](t, tUsers, "id", k.UserID)
	if u == nil {
		return nil, "", errorf(CodeNotFound, "no user with ID %q", k.UserID)
	}
	if err := checkTags(k.Tags); err != nil {
		return nil, "", err
	}
	if k.ID == "" || k.Hash == "" || get[AuthKey](t, tAuthKeys, "id", k.ID) != nil {
		return nil, "", errorf(CodeInvalid, "auth key: missing or duplicate ID, or no hash")
	}
	for _, tag := range k.Tags {
		if err := validTag(tag); err != nil {
			return nil, "", err
		}
	}
	if err := checkTagOwner(t, u, k.Tags); err != nil {
		return nil, "", err
	}
	k.CreatedAt, k.RevokedAt, k.Uses = t.c.Time, nil, 0
	t.add(tAuthKeys, &k)
	return &k, "authkey/" + k.ID, nil
}

func validTag(tag string) error {
	name, ok := cutPrefix(tag, "tag:")
	if !ok || ValidName("tag", name) != nil {
		return errorf(CodeInvalid, "tag %q: write tag:NAME, NAME a DNS label (tag:workmachine)", tag)
	}
	return nil
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) < len(p) || s[:len(p)] != p {
		return s, false
	}
	return s[len(p):], true
}

func authkeyRevoke(t *tx) (any, string, error) {
	var req ByID
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	old := get[AuthKey](t, tAuthKeys, "id", req.ID)
	if old == nil {
		return nil, "", errorf(CodeNotFound, "no auth key %q", req.ID)
	}
	k := *old
	if k.RevokedAt == nil {
		k.RevokedAt = timePtr(t.c.Time)
		t.put(tAuthKeys, &k)
	}
	return &k, "authkey/" + k.ID, nil
}

func nodeRegister(t *tx) (any, string, error) {
	var n Node
	if err := t.decode(&n); err != nil {
		return nil, "", err
	}
	if err := firstErr(ValidName("node", n.Name), n.checkSizes()); err != nil {
		return nil, "", err
	}
	if err := nameFree(t, n.Name); err != nil {
		return nil, "", err
	}
	if n.ID == "" || get[Node](t, tNodes, "id", n.ID) != nil {
		return nil, "", errorf(CodeInvalid, "node %q: missing or duplicate ID", n.Name)
	}
	if get[User](t, tUsers, "id", n.UserID) == nil {
		return nil, "", errorf(CodeNotFound, "no user with ID %q", n.UserID)
	}
	v4, v6, err := allocate(t, "node/"+n.Name)
	if err != nil {
		return nil, "", err
	}
	n.IPv4, n.IPv6, n.CreatedAt = v4.String(), v6.String(), t.c.Time
	t.add(tNodes, &n)
	return &n, "node/" + n.Name, nil
}

// nameFree checks that name is taken by neither a node nor a workspace: both are
// NAME.<domain> on the mesh.
func nameFree(t *tx, name string) error {
	if get[Node](t, tNodes, "name", name) != nil {
		return errorf(CodeConflict, "the name %q is taken by a node (nodes and workspaces share the mesh's DNS names)", name)
	}
	if get[Workspace](t, tWorkspaces, "name", name) != nil {
		return errorf(CodeConflict, "the name %q is taken by a workspace (nodes and workspaces share the mesh's DNS names)", name)
	}
	return nil
}

func nodeDelete(t *tx) (any, string, error) {
	var req ByName
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	n := get[Node](t, tNodes, "name", req.Name)
	if n == nil {
		return nil, "", errorf(CodeNotFound, "no node %q", req.Name)
	}
	if err := hostsNothing(t, n); err != nil {
		return nil, "", err
	}
	release(t, n.IPv4)
	t.del(tNodes, n)
	return nil, "node/" + n.Name, nil
}

// hostsNothing checks that node n hosts no workspace or environment, before it goes.
func hostsNothing(t *tx, n *Node) error {
	if ws := all[Workspace](t.Txn, tWorkspaces, "machine", n.Name); len(ws) > 0 {
		return errorf(CodeConflict, "node %q hosts %d workspace(s), %s first: delete them before the node", n.Name, len(ws), ws[0].Name)
	}
	if envs := all[Environment](t.Txn, tEnvs, "machine", n.Name); len(envs) > 0 {
		return errorf(CodeConflict, "node %q hosts %d environment(s), %s first: delete them before the node", n.Name, len(envs), envs[0].Name)
	}
	if xs := all[Exit](t.Txn, tExits, "node", n.Name); len(xs) > 0 {
		return errorf(CodeConflict, "node %q is exit %q: remove the exit before the node (meshctl exit remove %s)", n.Name, xs[0].Name, xs[0].Name)
	}
	return nil
}

func workspaceCreate(t *tx) (any, string, error) {
	var w Workspace
	if err := t.decode(&w); err != nil {
		return nil, "", err
	}
	if err := firstErr(ValidName("workspace", w.Name), w.checkSizes()); err != nil {
		return nil, "", err
	}
	if err := nameFree(t, w.Name); err != nil {
		return nil, "", err
	}
	if w.ID == "" || get[Workspace](t, tWorkspaces, "id", w.ID) != nil {
		return nil, "", errorf(CodeInvalid, "workspace %q: missing or duplicate ID", w.Name)
	}
	if get[User](t, tUsers, "id", w.OwnerID) == nil {
		return nil, "", errorf(CodeNotFound, "no user with ID %q", w.OwnerID)
	}
	if err := checkWorkmachine(t, w.Machine); err != nil {
		return nil, "", err
	}
	if w.Image == "" {
		return nil, "", errorf(CodeInvalid, "workspace %q: an image is required (--image REF)", w.Name)
	}
	if w.CPU < 0 || w.MemoryBytes < 0 {
		return nil, "", errorf(CodeInvalid, "workspace %q: CPU and memory limits must not be negative", w.Name)
	}
	if w.Desired == "" {
		w.Desired = Running
	}
	if w.Desired != Running && w.Desired != Stopped {
		return nil, "", errorf(CodeInvalid, "workspace %q: state %q: use running or stopped", w.Name, w.Desired)
	}
	if err := exitExists(t, w.Exit); err != nil {
		return nil, "", err
	}
	w.EgressState, w.EgressReason = "", ""
	v4, v6, err := allocate(t, "workspace/"+w.Name)
	if err != nil {
		return nil, "", err
	}
	w.IPv4, w.IPv6, w.CreatedAt, w.UpdatedAt = v4.String(), v6.String(), t.c.Time, t.c.Time
	w.State, w.Reason = "pending", ""
	t.add(tWorkspaces, &w)
	touchNode(t, w.Machine)
	return &w, "workspace/" + w.Name, nil
}

// WorkspaceState is the payload of workspace.set.
type WorkspaceState struct {
	Name    string `json:"name"`
	Desired string `json:"desired"`
}

func workspaceSet(t *tx) (any, string, error) {
	var req WorkspaceState
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	old := get[Workspace](t, tWorkspaces, "name", req.Name)
	if old == nil {
		return nil, "", errorf(CodeNotFound, "no workspace %q", req.Name)
	}
	if req.Desired != Running && req.Desired != Stopped {
		return nil, "", errorf(CodeInvalid, "workspace %q: state %q: use running or stopped", req.Name, req.Desired)
	}
	w := *old
	w.Desired, w.UpdatedAt = req.Desired, t.c.Time
	t.put(tWorkspaces, &w)
	return &w, "workspace/" + w.Name, nil
}

func workspaceDelete(t *tx) (any, string, error) {
	var req ByName
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	w := get[Workspace](t, tWorkspaces, "name", req.Name)
	if w == nil {
		return nil, "", errorf(CodeNotFound, "no workspace %q", req.Name)
	}
	endIntercepts(t, all[Intercept](t.Txn, tIntercepts, "workspace", w.Name))
	release(t, w.IPv4)
	deleteRecordings(t, w.ID)
	t.del(tWorkspaces, w)
	touchNode(t, w.Machine)
	return nil, "workspace/" + w.Name, nil
}

// touchNode marks a machine changed: the addresses it routes (its workspaces') are part of
// what its peers learn of it, so their map streams send it again.
func touchNode(t *tx, name string) {
	if n := get[Node](t, tNodes, "name", name); n != nil {
		c := *n
		t.put(tNodes, &c)
	}
}

// WorkspaceStatus is the payload of workspace.status: what the agent on Machine observed.
type WorkspaceStatus struct {
	Name    string `json:"name"`
	Machine string `json:"machine"`
	State   string `json:"state"`
	Reason  string `json:"reason,omitempty"`
	HostKey string `json:"host_key,omitempty"`
}

// maxReason bounds a reported reason.
const maxReason = 1024

func workspaceStatus(t *tx) (any, string, error) {
	var req WorkspaceStatus
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	old := get[Workspace](t, tWorkspaces, "name", req.Name)
	if old == nil {
		return nil, "", errorf(CodeNotFound, "no workspace %q", req.Name)
	}
	if old.Machine != req.Machine {
		return nil, "", errorf(CodeConflict, "workspace %q is on machine %q, not %q", req.Name, old.Machine, req.Machine)
	}
	if !slices.Contains(workspaceStates, req.State) {
		return nil, "", errorf(CodeInvalid, "workspace %q: state %q: use one of %s", req.Name, req.State, strings.Join(workspaceStates, ", "))
	}
	if len(req.Reason) > maxReason {
		req.Reason = req.Reason[:maxReason]
	}
	w := *old
	w.State, w.Reason, w.StateAt = req.State, req.Reason, t.c.Time
	if req.HostKey != "" {
		if len(req.HostKey) > maxReason {
			return nil, "", errorf(CodeInvalid, "workspace %q: a host key of %d bytes", req.Name, len(req.HostKey))
		}
		w.HostKey = req.HostKey
	}
	t.put(tWorkspaces, &w)
	return &w, "workspace/" + w.Name, nil
}

func policySet(t *tx) (any, string, error) {
	var p Policy
	if err := t.decode(&p); err != nil {
		return nil, "", err
	}
	old := get[policyRow](t, tPolicy, "id", "policy")
	p.Version = 1
	if old != nil {
		p.Version = old.Policy.Version + 1
	}
	t.put(tPolicy, &policyRow{ID: "policy", Policy: p})
	return &p, "policy", nil
}

// Restore is the payload of the restore command: a snapshot, as WriteSnapshot makes it.
// The admin API no longer writes it (a restore goes in as a Raft snapshot, unbounded by an
// entry's size: see ParseBackup and Store.RestoreSnapshot); it stays so that logs holding
// one replay as they did.
type Restore struct {
	Snapshot string `json:"snapshot"` // base64
}

func restore(t *tx) (any, string, error) {
	var req Restore
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	raw, err := base64.StdEncoding.DecodeString(req.Snapshot)
	if err != nil {
		return nil, "", errorf(CodeInvalid, "restore: snapshot is not base64: %v", err)
	}
	records, _, err := parseSnapshot(raw)
	if err != nil {
		return nil, "", err
	}
	_, hist, err := build(records)
	if err != nil {
		return nil, "", err // records the schema refuses: refuse before writing anything
	}
	t.wrote = true
	t.b.replaced() // the writes below go around put and del
	for _, tbl := range dataTables {
		if inMemdb(tbl) {
			_, err := t.DeleteAll(tbl, "id")
			must(err)
		}
	}
	for _, r := range records {
		if inMemdb(r.table) {
			must(t.Insert(r.table, r.obj))
		}
	}
	must(t.Insert(tMeta, &metaRow{Key: "restored", Value: strconv.FormatUint(t.index, 10)}))
	for _, tbl := range dataTables[:len(dataTables)-1] {
		t.b.changed(tbl, t.index)
	}
	// The cluster keeps its own audit log, the restore one more event in it. The answers
	// remembered for idempotency keys are the backup's: they describe its state. Entries
	// from past this log's index come from another cluster's log and mean nothing here.
	f := t.b.f
	f.hist.idem = slices.DeleteFunc(hist.idem, func(e *idemEntry) bool { return e.Index > t.index })
	f.keys = idemKeys(f.hist.idem)
	return nil, "cluster/state", nil
}

func timePtr(t time.Time) *time.Time { return &t }
