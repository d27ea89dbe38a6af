// Package api is the admin API's wire contract: the JSON types every route speaks, and a
// client for them. coord serves it; meshctl and node agents call it.
package api

import "time"

// Error is the body of every failed request: {"error":{"code":"…","message":"…"}}.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`    // machine-readable: "not_found", "conflict", "invalid", ...
	Message string `json:"message"` // names the problem and, where there is one, the fix
}

func (e *Error) Error() string { return e.Message }

// Error codes.
const (
	CodeInvalid      = "invalid"      // 400: the request is malformed or a field is wrong
	CodeUnauthorized = "unauthorized" // 401: no key, or a wrong, expired or revoked one
	CodeForbidden    = "forbidden"    // 403: the key's user may not do this
	CodeNotFound     = "not_found"    // 404
	CodeConflict     = "conflict"     // 409: a name already taken
	CodeTooLarge     = "too_large"    // 413
	CodeKeyReused    = "key_reused"   // 422: an Idempotency-Key sent again with another body
	CodeTooMany      = "too_many"     // 429: too many failed logins from one address; see Retry-After
	CodeUnavailable  = "unavailable"  // 503: no leader, or the cluster is not ready
	CodeInternal     = "internal"     // 500
)

// Roles.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// Desired states of workspaces and environments.
const (
	Running = "running"
	Stopped = "stopped"
)

// Read consistency, as ?consistency= takes it.
const (
	Stale        = "stale"        // this replica's state, however old
	Default      = "default"      // this replica's state once it has a leader it heard from recently
	Linearizable = "linearizable" // confirmed leadership, then the local state at the commit index
)

type User struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
}

type CreateUser struct {
	Name string `json:"name"`
	Role string `json:"role,omitempty"` // default member
}

type APIKey struct {
	ID        string     `json:"id"`
	User      string     `json:"user"`
	Name      string     `json:"name,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

type CreateAPIKey struct {
	User   string `json:"user,omitempty"`   // default: the caller; admins may name another user
	Name   string `json:"name,omitempty"`   // a note for humans
	Expiry string `json:"expiry,omitempty"` // Go duration ("720h"); empty: never
}

// NewAPIKey is the answer to creating a key: the secret is shown this once.
type NewAPIKey struct {
	APIKey APIKey `json:"apikey"`
	Key    string `json:"key"`
}

type AuthKey struct {
	ID        string     `json:"id"`
	User      string     `json:"user"`
	Reusable  bool       `json:"reusable"`
	Ephemeral bool       `json:"ephemeral"`
	Tags      []string   `json:"tags,omitempty"`
	Uses      int        `json:"uses"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

type CreateAuthKey struct {
	Reusable  bool     `json:"reusable,omitempty"`
	Ephemeral bool     `json:"ephemeral,omitempty"`
	Tags      []string `json:"tags,omitempty"`
	Expiry    string   `json:"expiry,omitempty"` // Go duration; default 24h
}

type NewAuthKey struct {
	AuthKey AuthKey `json:"authkey"`
	Key     string  `json:"key"`
}

type Node struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	User      string    `json:"user"`
	Tags      []string  `json:"tags,omitempty"`
	IPv4      string    `json:"ipv4,omitempty"`
	IPv6      string    `json:"ipv6,omitempty"`
	Online    bool      `json:"online"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	CreatedAt time.Time `json:"created_at"`
}

// SetTags is the body of PUT /v1/nodes/{name}/tags: the machine's tags, replacing its own.
type SetTags struct {
	Tags []string `json:"tags"`
}

type Workspace struct {
	ID      string  `json:"id"`
	Name    string  `json:"name"`
	Owner   string  `json:"owner"`
	Machine string  `json:"machine"`
	Image   string  `json:"image"`
	CPU     float64 `json:"cpu,omitempty"`
	Memory  int64   `json:"memory_bytes,omitempty"`
	Desired string  `json:"desired"` // running or stopped
	Env     string  `json:"env,omitempty"`
	IPv4    string  `json:"ipv4,omitempty"`
	IPv6    string  `json:"ipv6,omitempty"`
	State   string  `json:"state,omitempty"`    // observed: pending, pulling, starting, running, stopped, failed
	Reason  string  `json:"reason,omitempty"`   // why it failed, or how far a pull has come
	HostKey string  `json:"host_key,omitempty"` // SSH host key (authorized_keys form), for known_hosts
	// Exit is the exit its internet traffic is pinned to ("": its machine's uplink).
	Exit string `json:"exit,omitempty"`
	// EgressState is what its machine last verified of its egress through Exit: "" (not
	// checked yet, or not pinned), EgressVerified or EgressFailed (EgressReason says which
	// check failed and why).
	EgressState  string    `json:"egress_state,omitempty"`
	EgressReason string    `json:"egress_reason,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
}

// Observed egress states of a pinned workspace.
const (
	EgressVerified = "verified"
	EgressFailed   = "egress-failed"
)

type CreateWorkspace struct {
	Name    string  `json:"name"`
	Machine string  `json:"machine"`
	Image   string  `json:"image"`
	CPU     float64 `json:"cpu,omitempty"`
	Memory  string  `json:"memory,omitempty"` // "512m", "2g" or bytes
	Owner   string  `json:"owner,omitempty"`  // admins may create for another user
	Exit    string  `json:"exit,omitempty"`   // pin its egress to this exit (see Exit)
}

// SetExit is the body of POST /v1/workspaces/{name}/exit: the exit to pin the workspace's
// egress to, or "" to unpin it (its machine's uplink again). It takes effect live.
type SetExit struct {
	Exit string `json:"exit"`
}

// Exit is a way out to the internet that workspaces are pinned to: a mesh node started
// with `meshctl node --exit` (Kind ExitNode), or an external WireGuard peer imported from a
// wg-quick file (Kind ExitWireGuard). Our private key in the tunnel is sealed at rest and
// never returned.
type Exit struct {
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`                 // ExitNode or ExitWireGuard
	Node      string   `json:"node,omitempty"`       // the exit node's name (ExitNode)
	Endpoint  string   `json:"endpoint,omitempty"`   // the peer's host:port (ExitWireGuard)
	PublicKey string   `json:"public_key,omitempty"` // the peer's WireGuard public key (base64)
	Address   string   `json:"address,omitempty"`    // ours in the tunnel, comma-separated prefixes
	DNS       []string `json:"dns,omitempty"`        // resolvers reached through the tunnel
	// PublicIP is the address the internet sees traffic through this exit come from, as
	// verification expects it ("": not checked against one).
	PublicIP  string    `json:"public_ip,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Kinds of exit.
const (
	ExitNode      = "node"
	ExitWireGuard = "wireguard"
)

// CreateExit is the body of POST /v1/exits: WireGuard (the text of a wg-quick file) or Node
// (a mesh node's name), exactly one.
type CreateExit struct {
	Name      string `json:"name"`
	WireGuard string `json:"wireguard,omitempty"`
	Node      string `json:"node,omitempty"`
	PublicIP  string `json:"public_ip,omitempty"`
}

type Environment struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Owner     string    `json:"owner"`
	Machine   string    `json:"machine"`
	Services  []Service `json:"services"`
	Desired   string    `json:"desired"` // running or stopped
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Generation changes with every change of what should run (create, update, up, down).
	// A service whose Generation is lower was last observed under an older one: its state
	// is not yet the answer to the latest change.
	Generation uint64 `json:"generation,omitempty"`
}

// Service is one service of an environment: what its compose file declares, where it is on
// the mesh, and what its machine last observed of it.
type Service struct {
	Name    string `json:"name"`
	Image   string `json:"image"`
	Ports   []int  `json:"ports,omitempty"`
	IPv4    string `json:"ipv4,omitempty"`
	IPv6    string `json:"ipv6,omitempty"`
	DNSName string `json:"dns_name,omitempty"` // <service>.<env>.<domain>
	// Observed, as the machine reports it (see ServiceReport).
	State        string    `json:"state,omitempty"`
	Health       string    `json:"health,omitempty"`
	HealthOutput string    `json:"health_output,omitempty"`
	Restarts     int       `json:"restarts,omitempty"`
	ExitCode     int       `json:"exit_code,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	StateAt      time.Time `json:"state_at,omitzero"`
	Generation   uint64    `json:"generation,omitempty"` // of the definition it was observed under
}

// Observed states of an environment service. A one-shot job that finished is Exited (with
// its ExitCode); a service that runs again after exiting passes through Restarting.
const (
	ServicePending    = "pending"
	ServicePulling    = "pulling"
	ServiceStarting   = "starting"
	ServiceRunning    = "running"
	ServiceRestarting = "restarting"
	ServiceExited     = "exited"
	ServiceStopped    = "stopped"
	ServiceFailed     = "failed"
)

// Health of a service with a healthcheck ("" without one).
const (
	HealthStarting  = "starting"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// Ready reports whether s is as an environment that is up wants it: running (and healthy,
// when it has a healthcheck), or a job that finished with exit code 0.
func (s Service) Ready() bool {
	switch s.State {
	case ServiceRunning:
		return s.Health == "" || s.Health == HealthHealthy
	case ServiceExited:
		return s.ExitCode == 0
	}
	return false
}

type CreateEnvironment struct {
	Name    string `json:"name"`
	Machine string `json:"machine"`
	Compose string `json:"compose"` // the compose file's text
	Owner   string `json:"owner,omitempty"`
	// Variables are the values of the variables the compose file's secrets and configs take
	// their content from (environment: NAME), as meshctl finds them in the caller's
	// environment. Sealed at rest with the compose file; never returned.
	Variables map[string]string `json:"variables,omitempty"`
}

// UpdateEnvironment replaces an environment's compose file (PUT /v1/environments/{name}):
// services whose definition changed are recreated, the others keep running; a service
// keeps its addresses as long as its name stays.
type UpdateEnvironment struct {
	Compose   string            `json:"compose"`
	Variables map[string]string `json:"variables,omitempty"`
}

// Connect links a workspace to an environment (Env "" disconnects).
type Connect struct {
	Env string `json:"env"`
}

// Intercept sends an environment service's port to a workspace's port, over the mesh (flow
// 5). Global (no Headers): every new connection to the port goes to the workspace (the
// service's machine DNATs it; connections open before the start keep their path until they
// close). Personal (Headers): an HTTP proxy in front of the port sends each request whose
// headers all match to the workspace and every other request to the service. When the
// workspace does not answer on its port, traffic goes to the service again (TargetDown)
// until it does.
type Intercept struct {
	ID            string        `json:"id"`
	Name          string        `json:"name,omitempty"` // unique; meshctl takes it wherever an ID goes
	Env           string        `json:"env"`
	Service       string        `json:"service"`
	Port          int           `json:"port"`
	Workspace     string        `json:"workspace"`
	WorkspacePort int           `json:"workspace_port"`
	Mode          string        `json:"mode"`              // InterceptGlobal or InterceptPersonal
	Headers       []HeaderMatch `json:"headers,omitempty"` // personal: every one must match
	Owner         string        `json:"owner"`
	CreatedAt     time.Time     `json:"created_at"`
	// Observed by the machine running the service.
	State       string    `json:"state,omitempty"` // InterceptPending, InterceptActive, InterceptTargetDown, InterceptFailed
	Reason      string    `json:"reason,omitempty"`
	Connections uint64    `json:"connections,omitempty"` // diverted to the workspace since the start
	Requests    uint64    `json:"requests,omitempty"`    // personal: requests diverted since the start
	StateAt     time.Time `json:"state_at,omitzero"`     // since when State holds
}

// HeaderMatch is one header a personal intercept's requests must carry: Name (any case) with
// exactly Value (one of its values, if it has several).
type HeaderMatch struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Intercept modes and observed states.
const (
	InterceptGlobal   = "global"
	InterceptPersonal = "personal"

	InterceptPending    = "pending"     // its machine has not applied it yet
	InterceptActive     = "active"      // traffic goes to the workspace
	InterceptTargetDown = "target-down" // the workspace does not answer: traffic goes to the service
	InterceptFailed     = "failed"      // its machine could not apply it (Reason says why)
)

// CreateIntercept starts an intercept (POST /v1/intercepts). Inside a workspace (its own
// API), Workspace may be empty: this workspace.
type CreateIntercept struct {
	Name          string        `json:"name,omitempty"`
	Env           string        `json:"env"`
	Service       string        `json:"service"`
	Port          int           `json:"port"`
	Workspace     string        `json:"workspace"`
	WorkspacePort int           `json:"workspace_port"`
	Headers       []HeaderMatch `json:"headers,omitempty"` // none: global
}

type Policy struct {
	Text    string `json:"text"`
	Version uint64 `json:"version"`
}

// PolicyTestResult answers POST /v1/policy/test (a Policy whose tests all passed).
type PolicyTestResult struct {
	Tests int `json:"tests"` // how many tests ran
}

// PolicyExplainRequest asks POST /v1/policy/explain whether Src (a user, host, IP or
// selector) may reach Dst ("ws:api:22") under the policy in force.
type PolicyExplainRequest struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

// PolicyVerdict is the answer: Rule is the index of the acl that allows it, -1 for none.
type PolicyVerdict struct {
	Allowed bool   `json:"allowed"`
	Rule    int    `json:"rule"`
	Text    string `json:"text"`
}

type AuditEvent struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Object string    `json:"object"`
	Source string    `json:"source,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// Cluster is the state of the coord replicas as one of them sees it.
type Cluster struct {
	ID           string   `json:"id"` // the replica that answered
	Leader       string   `json:"leader"`
	State        string   `json:"state"` // Leader, Follower, Candidate
	Term         uint64   `json:"term"`
	CommitIndex  uint64   `json:"commit_index"`
	AppliedIndex uint64   `json:"applied_index"`
	Members      []Member `json:"members"`
}

type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"` // the --cluster address
	HTTP    string `json:"http,omitempty"`
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader"`
}

// JoinRequest is what a new replica sends to any member to join the cluster.
type JoinRequest struct {
	Token       string `json:"token"`
	ID          string `json:"id"`
	ClusterAddr string `json:"cluster_addr"`
	HTTPAddr    string `json:"http_addr"`
	PublicKey   []byte `json:"public_key"` // PKIX DER of the replica's TLS key
}

// JoinResponse carries the new replica's identity in the cluster.
type JoinResponse struct {
	CACert   []byte   `json:"ca_cert"` // PEM
	CAKey    []byte   `json:"ca_key"`  // PEM: every replica can admit the next one
	NodeCert []byte   `json:"node_cert"`
	Peers    []string `json:"peers"` // cluster addresses of the members
}

// MachineState is what coord wants on one machine, as its agent fetches it over the control
// protocol's Noise channel (the machine's own key is the credential): GET
// /machine/meshwork/state?index=N&digest=D answers once the state differs from the one of
// digest D (or after about 30 s, the same again); without them, at once.
type MachineState struct {
	Index        uint64            `json:"index"`
	Digest       string            `json:"digest"`  // of all but Index: what the agent acts on
	Machine      string            `json:"machine"` // the asking machine's node name
	Domain       string            `json:"domain"`  // the mesh's DNS domain
	Admins       []string          `json:"admins"`  // users who may reach every workspace's logs and shells
	Workspaces   []WorkspaceSpec   `json:"workspaces"`
	Environments []EnvironmentSpec `json:"environments"`
	Intercepts   []InterceptSpec   `json:"intercepts,omitempty"` // of the services this machine runs
}

// InterceptSpec is an intercept the machine running its service applies: in the service's
// network namespace, new connections to Port (global) or the requests matching Headers
// (personal) go to the workspace's mesh address and TargetPort, while it answers there.
type InterceptSpec struct {
	ID         string        `json:"id"`
	EnvID      string        `json:"env_id"` // the service's environment, as the machine names its containers
	Env        string        `json:"env"`
	Service    string        `json:"service"`
	Port       int           `json:"port"`
	Headers    []HeaderMatch `json:"headers,omitempty"` // none: global
	TargetIPv4 string        `json:"target_ipv4"`       // the workspace's
	TargetIPv6 string        `json:"target_ipv6,omitempty"`
	TargetPort int           `json:"target_port"`
}

// EnvironmentSpec is one environment a machine should run (Desired running) or keep stopped
// (containers stopped; volumes and addresses kept). It carries the compose file in the clear:
// only the machine's Noise channel sees it, and the agent keeps it in memory only.
type EnvironmentSpec struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	User      string            `json:"user"` // the owner's name: who, besides admins, may read its logs
	Desired   string            `json:"desired"`
	Compose   string            `json:"compose"`
	Variables map[string]string `json:"variables,omitempty"` // see CreateEnvironment.Variables
	// Generation is the definition's (Environment.Generation): reports carry the one they
	// were observed under.
	Generation uint64        `json:"generation,omitempty"`
	Services   []ServiceAddr `json:"services"`
	// Allow are the mesh addresses (IPs) that may connect to the services besides the
	// services themselves: the connected workspaces' and the machines of the owner and of
	// the admins. The agent enforces it in each service's network namespace.
	Allow []string `json:"allow"`
}

// ServiceAddr is a service's mesh addresses, allocated by coord.
type ServiceAddr struct {
	Name string `json:"name"`
	IPv4 string `json:"ipv4"`
	IPv6 string `json:"ipv6,omitempty"`
}

// WorkspaceSpec is one workspace a machine should run (Desired running) or keep stopped.
type WorkspaceSpec struct {
	ID      string  `json:"id"`
	Name    string  `json:"name"`
	User    string  `json:"user"` // the owner's name: /home/<user>
	Image   string  `json:"image"`
	IPv4    string  `json:"ipv4"`
	IPv6    string  `json:"ipv6,omitempty"`
	CPU     float64 `json:"cpu,omitempty"`
	Memory  int64   `json:"memory_bytes,omitempty"`
	Desired string  `json:"desired"`
	// Env is the environment the workspace is connected to: its resolver's search domains
	// gain <env>.<domain>, so the environment's bare service names resolve.
	Env string `json:"env,omitempty"`
	// SSH are the policy's grants for this workspace, besides its owner and the admins.
	SSH []SSHGrant `json:"ssh,omitempty"`
	// Exit is the exit its egress is pinned to (nil: its machine's uplink).
	Exit *ExitSpec `json:"exit,omitempty"`
}

// ExitSpec is what the machine hosting a pinned workspace needs to build its tunnel. It
// carries our private key in the clear: only that machine's Noise channel sees it, and
// the agent keeps it in memory only.
type ExitSpec struct {
	Name          string   `json:"name"`
	Kind          string   `json:"kind"`                      // ExitNode or ExitWireGuard
	Endpoint      string   `json:"endpoint,omitempty"`        // the peer's host:port (ExitWireGuard)
	PeerPublicKey string   `json:"peer_public_key,omitempty"` // base64
	PrivateKey    string   `json:"private_key,omitempty"`     // ours, base64 (ExitWireGuard)
	Address       string   `json:"address,omitempty"`         // ours in the tunnel, comma-separated prefixes
	DNS           []string `json:"dns,omitempty"`
	PublicIP      string   `json:"public_ip,omitempty"` // what verification expects to see
	NodeIPv4      string   `json:"node_ipv4,omitempty"` // the exit node's mesh addresses (ExitNode)
	NodeIPv6      string   `json:"node_ipv6,omitempty"`
}

// SSHGrant lets Users (mesh user names, or "*") log in to a workspace as any of Logins
// ("root", the workspace's user, or "*").
type SSHGrant struct {
	Users  []string `json:"users"`
	Logins []string `json:"logins"`
}

// MachineReport is an agent's report of what it observes (POST /machine/meshwork/report).
type MachineReport struct {
	Workspaces []WorkspaceReport `json:"workspaces"`
	Services   []ServiceReport   `json:"services,omitempty"`
	Intercepts []InterceptReport `json:"intercepts,omitempty"`
}

// InterceptReport is an intercept's observed state on the machine running its service (see
// Intercept's observed fields).
type InterceptReport struct {
	ID          string `json:"id"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
	Connections uint64 `json:"connections,omitempty"`
	Requests    uint64 `json:"requests,omitempty"`
}

// ServiceReport is one environment service's observed state (see Service).
type ServiceReport struct {
	Env          string `json:"env"`
	Name         string `json:"name"`
	State        string `json:"state"`
	Health       string `json:"health,omitempty"`
	HealthOutput string `json:"health_output,omitempty"` // the last healthcheck's output, at most 1 KiB
	Restarts     int    `json:"restarts,omitempty"`
	ExitCode     int    `json:"exit_code,omitempty"`
	Reason       string `json:"reason,omitempty"` // the last error, or how far a pull has come
	Generation   uint64 `json:"generation,omitempty"`
}

// WorkspaceReport is one workspace's observed state.
type WorkspaceReport struct {
	Name    string `json:"name"`
	State   string `json:"state"` // pending, pulling, starting, running, stopped, failed
	Reason  string `json:"reason,omitempty"`
	HostKey string `json:"host_key,omitempty"` // its SSH host key, authorized_keys form
}

// SessionReport is an agent's word of an SSH session into one of its workspaces (POST
// /machine/meshwork/session): Kind "start", then "end" with the recording of a PTY session.
type SessionReport struct {
	Kind      string        `json:"kind"` // start, end, or blocked (the shield blocked From; Command holds why)
	ID        string        `json:"id"`
	Workspace string        `json:"workspace"`
	User      string        `json:"user"`
	Node      string        `json:"node"`
	From      string        `json:"from"`
	Login     string        `json:"login"`
	Command   string        `json:"command,omitempty"`
	PTY       bool          `json:"pty,omitempty"`
	Start     time.Time     `json:"start"`
	Duration  time.Duration `json:"duration,omitempty"`
	BytesIn   int64         `json:"bytes_in,omitempty"`
	BytesOut  int64         `json:"bytes_out,omitempty"`
	ExitCode  int           `json:"exit_code,omitempty"`
	Cast      []byte        `json:"cast,omitempty"` // asciicast v2, gzip-compressed, at most 1 MiB
	CastSize  int64         `json:"cast_size,omitempty"`
	Truncated bool          `json:"truncated,omitempty"`
}

// ShieldBlock is an address a machine's SSH shield blocks (machine API: GET /v1/shield).
type ShieldBlock struct {
	Addr     string    `json:"addr"`
	Until    time.Time `json:"until"`
	Failures int       `json:"failures"`
}

// Recording is a recorded SSH session (GET /v1/recordings; the cast itself is at
// /v1/recordings/{id}, as application/x-asciicast).
type Recording struct {
	ID        string    `json:"id"`
	Workspace string    `json:"workspace"`
	User      string    `json:"user"`
	Node      string    `json:"node"`
	From      string    `json:"from"`
	Login     string    `json:"login"`
	Start     time.Time `json:"start"`
	Duration  float64   `json:"duration"` // seconds
	Size      int64     `json:"size"`     // of the cast, uncompressed
	Truncated bool      `json:"truncated,omitempty"`
}
