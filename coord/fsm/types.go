// Package fsm is coord's replicated state: the records (users, keys, nodes, workspaces,
// policy, audit) in an in-memory go-memdb store, changed only by typed, versioned commands
// applied from the Raft log. Every check that keeps the state sound (unique names, existing
// references) runs inside Apply, so concurrent writers cannot break it.
package fsm

import (
	"encoding/json"
	"fmt"
	"time"
)

// User is a person or robot that owns things and holds keys.
type User struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"` // "admin" or "member"
	CreatedAt time.Time `json:"created_at"`
}

// APIKey lets its user call the admin API. Only the secret's hash is kept.
type APIKey struct {
	ID        string     `json:"id"`
	UserID    string     `json:"user_id"`
	Name      string     `json:"name,omitempty"`
	Hash      string     `json:"hash"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// AuthKey lets a machine join the mesh as its user.
type AuthKey struct {
	ID        string     `json:"id"`
	UserID    string     `json:"user_id"`
	Hash      string     `json:"hash"`
	Reusable  bool       `json:"reusable"`
	Ephemeral bool       `json:"ephemeral"`
	Tags      []string   `json:"tags,omitempty"`
	Uses      int        `json:"uses"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Node is a machine on the mesh.
type Node struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	UserID     string    `json:"user_id"`
	Tags       []string  `json:"tags,omitempty"`
	IPv4       string    `json:"ipv4,omitempty"`
	IPv6       string    `json:"ipv6,omitempty"`
	MachineKey string    `json:"machine_key,omitempty"` // mkey:…, the Noise identity
	NodeKey    string    `json:"node_key,omitempty"`    // nodekey:…, the WireGuard key
	DiscoKey   string    `json:"disco_key,omitempty"`
	Endpoints  []string  `json:"endpoints,omitempty"` // ip:port candidates for direct paths
	HomeDERP   int       `json:"home_derp,omitempty"`
	OS         string    `json:"os,omitempty"`
	Ephemeral  bool      `json:"ephemeral,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	LastSeen   time.Time `json:"last_seen,omitzero"`
	// Online: the node holds a map stream, on the replica and boot Stream names.
	Online bool   `json:"online,omitempty"`
	Stream string `json:"stream,omitempty"`
	// ModifyIndex is the log index of the node's last change: map streams send only the
	// nodes changed since they last looked.
	ModifyIndex uint64 `json:"modify_index"`
}

// NodeGone records a deleted node, so map streams can tell peers to drop it.
type NodeGone struct {
	ID    string `json:"id"`
	Index uint64 `json:"index"`
}

// Workspace is a dev container wanted on a machine.
type Workspace struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	OwnerID     string    `json:"owner_id"`
	Machine     string    `json:"machine"`
	Image       string    `json:"image"`
	CPU         float64   `json:"cpu,omitempty"`
	MemoryBytes int64     `json:"memory_bytes,omitempty"`
	Desired     string    `json:"desired"`       // "running" or "stopped"
	Env         string    `json:"env,omitempty"` // the environment it is connected to
	IPv4        string    `json:"ipv4,omitempty"`
	IPv6        string    `json:"ipv6,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// State is what its machine's agent last reported: pending (nothing reported yet),
	// pulling, starting, running, stopped or failed; Reason says why it failed, or how far
	// a pull has come.
	State   string    `json:"state,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	StateAt time.Time `json:"state_at,omitzero"`
	// HostKey is the SSH host key its machine serves it with (authorized_keys form).
	HostKey string `json:"host_key,omitempty"`
	// Exit is the exit its egress is pinned to ("": its machine's uplink).
	Exit string `json:"exit,omitempty"`
	// EgressState is what its machine last verified of its egress ("", "verified",
	// "egress-failed"), EgressReason the failed check and why. Cleared when Exit changes.
	EgressState  string `json:"egress_state,omitempty"`
	EgressReason string `json:"egress_reason,omitempty"`
}

// Observed states of a workspace, as agents report them.
var workspaceStates = []string{"pending", "pulling", "starting", "running", "stopped", "failed"}

// Environment is a set of services from a compose file, wanted on a machine.
type Environment struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	OwnerID   string    `json:"owner_id"`
	Machine   string    `json:"machine"`
	Compose   string    `json:"compose"`             // sealed (base64), as the admin API stores it
	Variables string    `json:"variables,omitempty"` // sealed (base64): the values its secrets and configs take
	Services  []Service `json:"services"`
	Desired   string    `json:"desired"` // "running" or "stopped"
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Generation is the log index of the command that last changed what should run: create,
	// update, up and down.
	Generation uint64 `json:"generation,omitempty"`
}

// Service is one service of an environment: what its compose file declares, the mesh
// addresses coord leased it, and what its machine last reported of it.
type Service struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	Ports []int  `json:"ports,omitempty"`
	IPv4  string `json:"ipv4,omitempty"`
	IPv6  string `json:"ipv6,omitempty"`
	// Observed, as the hosting machine's agent reports it (environment.status).
	State        string    `json:"state,omitempty"`
	Health       string    `json:"health,omitempty"`
	HealthOutput string    `json:"health_output,omitempty"`
	Restarts     int       `json:"restarts,omitempty"`
	ExitCode     int       `json:"exit_code,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	StateAt      time.Time `json:"state_at,omitzero"`
	Generation   uint64    `json:"generation,omitempty"` // the environment's, as the machine observed it
}

// Intercept sends an environment service's port to a workspace's port: every new
// connection (global, no Headers) or the HTTP requests carrying every one of Headers
// (personal).
type Intercept struct {
	ID            string        `json:"id"`
	Name          string        `json:"name,omitempty"` // unique when set
	Env           string        `json:"env"`
	Service       string        `json:"service"`
	Port          int           `json:"port"`
	Workspace     string        `json:"workspace"`
	WorkspacePort int           `json:"workspace_port"`
	Headers       []HeaderMatch `json:"headers,omitempty"` // canonical names, sorted by name
	OwnerID       string        `json:"owner_id"`
	Target        string        `json:"target"`         // "env/service:port"
	Slot          string        `json:"slot,omitempty"` // Target and the header set: unique among intercepts
	CreatedAt     time.Time     `json:"created_at"`
	// Observed, as the machine running the service reports it (intercept.status).
	State       string    `json:"state,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Connections uint64    `json:"connections,omitempty"`
	Requests    uint64    `json:"requests,omitempty"`
	StateAt     time.Time `json:"state_at,omitzero"`
}

// HeaderMatch is a header a personal intercept's requests must carry with exactly Value.
type HeaderMatch struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Policy is the mesh policy, HuJSON as the user wrote it.
type Policy struct {
	Text    string `json:"text"`
	Version uint64 `json:"version"`
}

// AuditEvent records one change: who did what to which object, from where.
type AuditEvent struct {
	Seq    uint64    `json:"seq"` // the Raft index of the change
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Object string    `json:"object"`
	Source string    `json:"source,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// Roles and desired states.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
	Running    = "running"
	Stopped    = "stopped"
)

// Error is a command refused for a reason the caller can act on.
type Error struct {
	Code string `json:"code"` // one of the Code constants
	Msg  string `json:"msg"`
}

func (e *Error) Error() string { return e.Msg }

// Is makes errors.Is(err, ErrNotFound) and friends match on the code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Msg == "" && t.Code == e.Code
}

// Error codes; the sentinels match any error of their code with errors.Is.
const (
	CodeNotFound    = "not_found"
	CodeConflict    = "conflict"
	CodeInvalid     = "invalid"
	CodeUnsupported = "unsupported"
	CodeForbidden   = "forbidden"
)

var (
	ErrNotFound    = &Error{Code: CodeNotFound}
	ErrConflict    = &Error{Code: CodeConflict}
	ErrInvalid     = &Error{Code: CodeInvalid}
	ErrUnsupported = &Error{Code: CodeUnsupported}
	ErrForbidden   = &Error{Code: CodeForbidden}
)

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Result is what applying a command gives back, the same on every replica and across the
// forwarding hop: the log index, the changed object as JSON, or an error.
type Result struct {
	Index uint64          `json:"index"`
	Value json.RawMessage `json:"value,omitempty"`
	Err   *Error          `json:"err,omitempty"`

	// obj is the value not yet encoded: only the replica that answers the request reads
	// it, so the others never spend the encoding. It is a row of the state, which is never
	// changed in place, so encoding it later gives what encoding it at apply time would.
	obj any
}

// value returns the result's value as JSON.
func (r *Result) value() (json.RawMessage, error) {
	if r.Value != nil || r.obj == nil {
		return r.Value, nil
	}
	return json.Marshal(r.obj)
}

// MarshalJSON encodes the result with its value (for the forwarding hop and snapshots).
func (r Result) MarshalJSON() ([]byte, error) {
	type wire Result // without this method
	v, err := r.value()
	if err != nil {
		return nil, err
	}
	w := wire(r)
	w.Value = v
	return json.Marshal(w)
}

// Decode unmarshals the result's value into v, or returns its error.
func (r *Result) Decode(v any) error {
	if r.Err != nil {
		return r.Err
	}
	raw, err := r.value()
	if err != nil || v == nil || len(raw) == 0 {
		return err
	}
	return json.Unmarshal(raw, v)
}

// ValidName checks a name that becomes a DNS label: 1 to 63 of a-z, 0-9 and '-', not
// starting or ending with '-'.
func ValidName(kind, name string) error {
	ok := len(name) >= 1 && len(name) <= 63 && name[0] != '-' && name[len(name)-1] != '-'
	for _, c := range name {
		ok = ok && (c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-')
	}
	if !ok {
		return errorf(CodeInvalid, "%s name %q: use 1 to 63 lower-case letters, digits and '-', not starting or ending with '-' (it becomes a DNS name)", kind, name)
	}
	return nil
}
