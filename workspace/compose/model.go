package compose

import "time"

// Project is an environment's compose file as Meshwork runs it.
type Project struct {
	Name     string   // the environment
	Services []Spec   // sorted by name
	Volumes  []string // named volumes (persistent per environment), sorted
}

// Spec is one service as a workmachine's agent runs it.
type Spec struct {
	Name        string
	Image       string
	Command     []string          // nil: the image's CMD
	Entrypoint  []string          // nil: the image's ENTRYPOINT
	Environment map[string]string // interpolated
	Ports       []int             // container ports it serves (ports: targets and expose:), sorted
	Healthcheck *Healthcheck      // nil: none (or disabled)
	DependsOn   map[string]Condition
	Restart     Restart
	Limits      Limits
	User        string
	WorkingDir  string
	Tmpfs       []string // mount targets
	Labels      map[string]string
	Init        bool
	Hostname    string
	Aliases     []string // network aliases, sorted
	Volumes     []Mount
	Configs     []File
	Secrets     []File // mounted under /run/secrets unless a target says otherwise
}

// Healthcheck is a service's healthcheck, run inside its container.
type Healthcheck struct {
	Test        []string // as compose writes it: ["CMD", ...], ["CMD-SHELL", "..."]
	Interval    time.Duration
	Timeout     time.Duration
	Retries     int
	StartPeriod time.Duration
}

// Condition is what a service waits for in a dependency.
type Condition string

// The depends_on conditions.
const (
	ServiceStarted               = Condition("service_started")
	ServiceHealthy               = Condition("service_healthy")
	ServiceCompletedSuccessfully = Condition("service_completed_successfully")
)

// Restart is a service's restart policy.
type Restart struct {
	Policy     string // "no", "always", "on-failure" or "unless-stopped"
	MaxRetries int    // on-failure:N; 0 is unbounded
}

// Limits are deploy.resources.limits; zero means none.
type Limits struct {
	CPUs        float64
	MemoryBytes int64
}

// Mount is a volume mounted into a service.
type Mount struct {
	Volume   string // a named volume of the project; "" for an anonymous one (removed with the container)
	Target   string
	ReadOnly bool
}

// File is a config or secret mounted into a service: its content is inline in the compose
// file, or the value of a variable (FromEnv) that coord provides at run time.
type File struct {
	Name    string
	Target  string
	Mode    uint32 // 0: 0444 for configs, 0400 for secrets
	UID     string
	GID     string
	Content Sensitive
	FromEnv string
}

// Sensitive is content that must not be printed: it formats as [redacted].
type Sensitive []byte

// String returns "[redacted]".
func (Sensitive) String() string { return "[redacted]" }

// GoString returns "[redacted]".
func (Sensitive) GoString() string { return "[redacted]" }
