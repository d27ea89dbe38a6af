package fsm

import (
	"fmt"
	"strings"
)

// Join is the payload of node.join: a machine registering through the mesh control
// protocol. A machine seen before (same machine key) keeps its name and addresses and may
// rotate its node key without an auth key; a new one needs a valid auth key.
type Join struct {
	ID         string `json:"id"` // for a new node
	Hostname   string `json:"hostname"`
	MachineKey string `json:"machine_key"`
	NodeKey    string `json:"node_key"`
	AuthKeyID  string `json:"auth_key_id,omitempty"` // checked against its hash before proposing
	OS         string `json:"os,omitempty"`
}

func nodeJoin(t *tx) (any, string, error) {
	var j Join
	if err := t.decode(&j); err != nil {
		return nil, "", err
	}
	if err := j.checkSizes(); err != nil {
		return nil, "", err
	}
	if j.MachineKey == "" || j.NodeKey == "" {
		return nil, "", errorf(CodeInvalid, "join: machine and node keys are required")
	}
	if old := get[Node](t, tNodes, "machine", j.MachineKey); old != nil {
		return rejoin(t, old, j)
	}
	if other := get[Node](t, tNodes, "nodekey", j.NodeKey); other != nil {
		return nil, "", errorf(CodeConflict, "node key already used by node %q", other.Name)
	}
	ak, err := useAuthKey(t, j.AuthKeyID)
	if err != nil {
		return nil, "", err
	}
	// The key's tags are checked again: its user may have lost them since it was made.
	u := get[User](t, tUsers, "id", ak.UserID)
	if u == nil {
		return nil, "", errorf(CodeInvalid, "auth key %s belongs to a deleted user; create a new one", ak.ID)
	}
	if err := checkTagOwner(t, u, ak.Tags); err != nil {
		return nil, "", err
	}
	if j.ID == "" || get[Node](t, tNodes, "id", j.ID) != nil {
		return nil, "", errorf(CodeInvalid, "join: missing or duplicate ID")
	}
	name := freeName(t, Label(j.Hostname))
	v4, v6, err := allocate(t, "node/"+name)
	if err != nil {
		return nil, "", err
	}
	n := &Node{ID: j.ID, Name: name, UserID: ak.UserID, Tags: ak.Tags, Ephemeral: ak.Ephemeral,
		MachineKey: j.MachineKey, NodeKey: j.NodeKey, OS: j.OS, IPv4: v4.String(), IPv6: v6.String(),
		CreatedAt: t.c.Time, LastSeen: t.c.Time}
	used := *ak
	used.Uses++
	t.put(tAuthKeys, &used)
	t.add(tNodes, n)
	return n, "node/" + n.Name, nil
}

// rejoin updates a known machine: a new node key (rotation, or a restart with fresh state).
func rejoin(t *tx, old *Node, j Join) (any, string, error) {
	if other := get[Node](t, tNodes, "nodekey", j.NodeKey); other != nil && other.ID != old.ID {
		return nil, "", errorf(CodeConflict, "node key already used by node %q", other.Name)
	}
	n := *old
	n.NodeKey, n.LastSeen = j.NodeKey, t.c.Time
	if j.OS != "" {
		n.OS = j.OS
	}
	t.put(tNodes, &n)
	return &n, "node/" + n.Name, nil
}

// useAuthKey checks, at the command's time, that auth key id may register one more machine.
func useAuthKey(t *tx, id string) (*AuthKey, error) {
	ak := get[AuthKey](t, tAuthKeys, "id", id)
	switch {
	case id == "" || ak == nil:
		return nil, errorf(CodeInvalid, "an auth key is required to join: create one with meshctl authkey create")
	case ak.RevokedAt != nil:
		return nil, errorf(CodeInvalid, "auth key %s was revoked; create a new one with meshctl authkey create", id)
	case ak.ExpiresAt != nil && !t.c.Time.Before(*ak.ExpiresAt):
		return nil, errorf(CodeInvalid, "auth key %s expired at %s; create a new one with meshctl authkey create", id, ak.ExpiresAt.Format("2006-01-02 15:04 MST"))
	case !ak.Reusable && ak.Uses > 0:
		return nil, errorf(CodeInvalid, "auth key %s was single-use and is used up; create a new one (--reusable for many machines)", id)
	}
	return ak, nil
}

// Label turns a host name into a DNS label: lower case, other characters as '-', at most 63,
// "node" when nothing is left.
func Label(host string) string {
	host, _, _ = strings.Cut(strings.ToLower(host), ".")
	b := []byte(host)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			b[i] = '-'
		}
	}
	s := strings.Trim(string(b), "-")
	if len(s) > 58 { // room for a "-NNNN" suffix
		s = strings.Trim(s[:58], "-")
	}
	if s == "" {
		s = "node"
	}
	return s
}

// freeName returns name, or name-2, name-3, … : the first not taken by a node or workspace.
func freeName(t *tx, name string) string {
	for i := 1; ; i++ {
		n := name
		if i > 1 {
			n = fmt.Sprintf("%s-%d", name, i)
		}
		if nameFree(t, n) == nil {
			return n
		}
	}
}

// NodeUpdate is the payload of node.update: what a node reports of itself in map requests.
type NodeUpdate struct {
	NodeKey   string   `json:"node_key"`
	DiscoKey  string   `json:"disco_key,omitempty"`
	Endpoints []string `json:"endpoints,omitempty"`
	HomeDERP  int      `json:"home_derp,omitempty"`
	OS        string   `json:"os,omitempty"`
}

func nodeUpdate(t *tx) (any, string, error) {
	var u NodeUpdate
	if err := t.decode(&u); err != nil {
		return nil, "", err
	}
	if err := u.checkSizes(); err != nil {
		return nil, "", err
	}
	old := get[Node](t, tNodes, "nodekey", u.NodeKey)
	if old == nil {
		return nil, "", errorf(CodeNotFound, "no node with key %s", u.NodeKey)
	}
	n := *old
	n.DiscoKey, n.Endpoints, n.HomeDERP, n.LastSeen = u.DiscoKey, u.Endpoints, u.HomeDERP, t.c.Time
	if u.OS != "" {
		n.OS = u.OS
	}
	t.put(tNodes, &n)
	return &n, "node/" + n.Name, nil
}
