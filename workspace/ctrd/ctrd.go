// Package ctrd runs workspaces as containerd containers, each in its own network namespace,
// with the owner's shared home and the workspace's directory mounted in, and runs processes
// inside them as the owner's user; and environment services, containers made from compose
// definitions, each in a network namespace of its own behind a guard.
package ctrd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// Defaults for the Runtime's fields.
const (
	DefaultAddress     = "/var/lib/meshwork/containerd/containerd.sock"
	DefaultNamespace   = "meshwork"
	DefaultSnapshotter = "overlayfs"
	DefaultStopGrace   = 5 * time.Second
	DefaultPullTimeout = 15 * time.Second
)

// Container labels. The machine and owner labels are how runtimes sharing one containerd tell
// their containers apart; the rest let List and Delete work from containerd's state alone.
const (
	LabelMachine   = "meshwork.machine"
	LabelWorkspace = "meshwork.workspace"
	LabelUser      = "meshwork.user"
	LabelID        = "meshwork.id"
	LabelIPv4      = "meshwork.ip4"
	LabelIPv6      = "meshwork.ip6"
	LabelNetns     = "meshwork.netns"
	LabelHostIf    = "meshwork.hostif"
)

// Errors returned wrapped, for callers to branch on.
var (
	ErrNotFound   = errors.New("no such workspace")        // this machine does not have it
	ErrNotRunning = errors.New("workspace is not running") // it exists, but its task does not run
)

// A Runtime runs this machine's workspaces on containerd. Set the fields, then call methods;
// the connection is made on first use. Calls for different workspaces may run concurrently;
// calls for the same workspace name are serialized.
type Runtime struct {
	Address     string                           // containerd socket; default DefaultAddress
	Namespace   string                           // containerd namespace; default DefaultNamespace
	Snapshotter string                           // default DefaultSnapshotter
	Machine     string                           // required: this machine's node name
	Identity    string                           // required: who this runtime is among all sharing the containerd (the node's stable ID from coord); only containers labelled with Machine and Identity are touched
	Dir         string                           // required: home/<user>, workspaces/<name>, run/<name>/, logs/<name>.log
	StopGrace   time.Duration                    // SIGTERM → SIGKILL wait in Stop; default DefaultStopGrace
	Tools       string                           // host dir mounted read-only at ToolsPath in workspaces created from now on; empty: none
	PullTimeout time.Duration                    // a pull that makes no progress this long fails; default DefaultPullTimeout
	SecretsDir  string                           // services' secrets: a tmpfs per service under it, never under Dir; default DefaultSecretsDir
	Logf        func(format string, args ...any) // nil discards

	mu     sync.Mutex // guards the fields below
	client *containerd.Client
	closed bool
	locks  map[string]*sync.Mutex // per workspace name
}

// A Spec is what a workspace should be.
type Spec struct {
	ID, Name, User string // ID: coord's unique id (e.g. "w_3f…"); Name: DNS label; User: owner's user name
	Image          string
	IPv4, IPv6     netip.Addr // IPv4 required
	CPU            float64    // cores; 0 unlimited
	Memory         int64      // bytes; 0 unlimited
	DNS            []string   // nameservers for resolv.conf; none copies the machine's
	Search         []string   // search domains
}

// State is a workspace's lifecycle state.
type State string

// The states a Status reports.
const (
	StatePending  State = "pending"
	StatePulling  State = "pulling"
	StateStarting State = "starting"
	StateRunning  State = "running"
	StateStopped  State = "stopped"
	StateFailed   State = "failed"
)

// Status is a workspace's state as containerd sees it.
type Status struct {
	Name   string
	State  State
	Reason string // failure reason, or pull progress
	PID    int    // task init pid while running
}

var (
	labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	userRE  = regexp.MustCompile(`^[a-z_][a-z0-9_.-]{0,31}$`)
	idRE    = regexp.MustCompile(`^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$`)
)

// Validate reports what is wrong with s, naming the field to fix.
func (s Spec) Validate() error {
	switch {
	case !idRE.MatchString(s.ID) || len(s.ID) > 60:
		return fmt.Errorf("workspace id %q: letters and digits joined by . _ or -, at most 60", s.ID)
	case !labelRE.MatchString(s.Name):
		return fmt.Errorf("workspace name %q: give a DNS label (a-z, 0-9, -)", s.Name)
	case !userRE.MatchString(s.User):
		return fmt.Errorf("workspace %s: user name %q is not a valid Unix user name", s.Name, s.User)
	case s.Image == "":
		return fmt.Errorf("workspace %s: no image given", s.Name)
	case !s.IPv4.Is4():
		return fmt.Errorf("workspace %s: IPv4 %v: the workspace needs a mesh IPv4", s.Name, s.IPv4)
	case s.IPv6.IsValid() && !s.IPv6.Is6():
		return fmt.Errorf("workspace %s: IPv6 %v is not an IPv6 address", s.Name, s.IPv6)
	case s.CPU < 0 || s.Memory < 0:
		return fmt.Errorf("workspace %s: negative CPU or memory limit", s.Name)
	}
	return nil
}

func (r *Runtime) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}

func (r *Runtime) check() error {
	if r.Machine == "" {
		return errors.New("ctrd: Runtime.Machine is empty: set it to this machine's node name")
	}
	if r.Dir == "" || !filepath.IsAbs(r.Dir) {
		return fmt.Errorf("ctrd: Runtime.Dir %q: set it to an absolute directory", r.Dir)
	}
	return nil
}

// conn returns the containerd client (connecting on first use) and ctx in our namespace.
func (r *Runtime) conn(ctx context.Context) (*containerd.Client, context.Context, error) {
	if err := r.check(); err != nil {
		return nil, ctx, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ctx, errors.New("ctrd: runtime closed")
	}
	if r.client == nil {
		addr := cmpOr(r.Address, DefaultAddress)
		if _, err := os.Stat(addr); err != nil {
			return nil, ctx, fmt.Errorf("ctrd: containerd socket %s: %w (start it with scripts/deps.sh)", addr, err)
		}
		c, err := containerd.New(addr, containerd.WithTimeout(10*time.Second))
		if err != nil {
			return nil, ctx, fmt.Errorf("ctrd: connect to containerd at %s: %w (start it with scripts/deps.sh)", addr, err)
		}
		r.client = c
	}
	return r.client, namespaces.WithNamespace(ctx, cmpOr(r.Namespace, DefaultNamespace)), nil
}

// lock serializes calls for one workspace name; call the returned func to unlock.
func (r *Runtime) lock(name string) func() {
	r.mu.Lock()
	if r.locks == nil {
		r.locks = map[string]*sync.Mutex{}
	}
	m := r.locks[name]
	if m == nil {
		m = new(sync.Mutex)
		r.locks[name] = m
	}
	r.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// Close closes the connection to containerd. Workspaces keep running. Idempotent.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.client == nil {
		return nil
	}
	err := r.client.Close()
	r.client = nil
	return err
}

// LogPath is the file a workspace's stdout and stderr go to.
func (r *Runtime) LogPath(name string) string { return filepath.Join(r.Dir, "logs", name+".log") }

func (r *Runtime) homeDir(user string) string { return filepath.Join(r.Dir, "home", user) }
func (r *Runtime) wsDir(name string) string   { return filepath.Join(r.Dir, "workspaces", name) }
func (r *Runtime) runDir(name string) string  { return filepath.Join(r.Dir, "run", name) }

// SocketsPath is where workspaces see SocketDir: the agent puts sockets there that processes
// in the workspace connect to (ssh -A's agent).
const SocketsPath = "/run/meshwork"

// SocketDir is the host directory mounted at SocketsPath in workspace name (created with it).
func (r *Runtime) SocketDir(name string) string { return filepath.Join(r.runDir(name), "sockets") }

func (r *Runtime) stopGrace() time.Duration {
	if r.StopGrace > 0 {
		return r.StopGrace
	}
	return DefaultStopGrace
}

func (r *Runtime) snapshotter() string { return cmpOr(r.Snapshotter, DefaultSnapshotter) }

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
