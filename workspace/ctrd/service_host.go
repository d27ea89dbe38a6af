package ctrd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	containerd "github.com/containerd/containerd/v2/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"meshwork.dev/workspace/compose"
	"meshwork.dev/workspace/wsnet"
)

// DefaultSecretsDir is the default of Runtime.SecretsDir.
const DefaultSecretsDir = "/run/meshwork-secrets"

// serviceFile, in a service's dir, records its network config, its host name, its
// environment's names and addresses and who else may connect: what DeleteService and
// SetServicePeers work from.
const serviceFile = "service.json"

type serviceState struct {
	Net      wsnet.Config
	Hostname string
	Hosts    []HostEntry
	Allow    []netip.Prefix
}

func (r *Runtime) serviceDir(id string) string { return filepath.Join(r.Dir, "services", id) }

// ServiceLogPath is the file service id's stdout and stderr go to, appended across restarts.
func (r *Runtime) ServiceLogPath(id string) string {
	return filepath.Join(r.Dir, "logs", "services", id+".log")
}

func (r *Runtime) secretsDir(id string) string {
	return filepath.Join(cmpOr(r.SecretsDir, DefaultSecretsDir), id)
}

func (r *Runtime) secretPath(id string, i int) string {
	return filepath.Join(r.secretsDir(id), strconv.Itoa(i))
}

func (r *Runtime) configPath(id string, i int) string {
	return filepath.Join(r.serviceDir(id), "configs", strconv.Itoa(i))
}

func (r *Runtime) anonDir(id string) string { return filepath.Join(r.serviceDir(id), "anon") }

// volumesDir holds environment envID's named volumes.
func (r *Runtime) volumesDir(envID string) string { return filepath.Join(r.Dir, "volumes", envID) }

// volumeDir is the host dir of s's i'th volume: the environment's named volume, or an
// anonymous one of the container's.
func (r *Runtime) volumeDir(s ServiceSpec, i int) string {
	if v := s.Service.Volumes[i].Volume; v != "" {
		return filepath.Join(r.volumesDir(s.EnvID), v)
	}
	return filepath.Join(r.anonDir(s.ID), strconv.Itoa(i))
}

// prepareService makes s's dir, its resolv.conf, hosts and hostname, its network and its guard.
func (r *Runtime) prepareService(s ServiceSpec) error {
	dir := r.serviceDir(s.ID)
	for _, d := range []string{dir, filepath.Join(dir, "configs"), filepath.Dir(r.ServiceLogPath(s.ID))} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
	}
	st := serviceState{Net: ServiceNetConfig(s), Hostname: serviceHostname(s), Hosts: s.Hosts, Allow: s.Allow}
	stJSON, _ := json.Marshal(st)
	files := map[string]string{
		"resolv.conf": resolvConf(Spec{DNS: s.DNS, Search: s.Search}),
		"hosts":       st.hostsFile(),
		"hostname":    st.Hostname + "\n",
		serviceFile:   string(stJSON) + "\n",
	}
	for name, content := range files {
		if err := writeInPlace(filepath.Join(dir, name), content); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
	}
	if _, err := wsnet.Setup(st.Net); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	return guard(st)
}

// guard applies st's firewall in the service's namespace.
func guard(st serviceState) error {
	allow := make([]netip.Prefix, 0, len(st.Hosts)+len(st.Allow))
	for _, h := range st.Hosts {
		allow = append(allow, netip.PrefixFrom(h.Addr, h.Addr.BitLen()))
	}
	return wsnet.Guard(st.Net.Netns, append(allow, st.Allow...))
}

func (r *Runtime) loadServiceState(id string) (serviceState, bool) {
	var st serviceState
	b, err := os.ReadFile(filepath.Join(r.serviceDir(id), serviceFile))
	if err != nil || json.Unmarshal(b, &st) != nil || st.Net.Validate() != nil {
		return st, false
	}
	return st, true
}

// hostsFile is the service's /etc/hosts: localhost, its environment, and its own hostname.
func (st serviceState) hostsFile() string {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	self := false
	for _, h := range st.Hosts {
		fmt.Fprintf(&b, "%s\t%s\n", h.Addr, strings.Join(h.Names, " "))
		self = self || h.Addr == st.Net.IPv4
	}
	if !self {
		fmt.Fprintf(&b, "%s\t%s\n", st.Net.IPv4, st.Hostname)
	}
	return b.String()
}

// writeServiceFiles writes s's configs (under its dir) and secrets (on a tmpfs of their own,
// never on disk), owned as fileOwner says, before a task starts.
func (r *Runtime) writeServiceFiles(ctx context.Context, ctr containerd.Container, s ServiceSpec) error {
	sp, err := ctr.Spec(ctx)
	if err != nil {
		return fmt.Errorf("container spec: %w", err)
	}
	user := sp.Process.User
	for i, f := range s.Service.Configs {
		if err := writeServiceFile(r.configPath(s.ID, i), f, 0o444, user); err != nil {
			return fmt.Errorf("config %w", err)
		}
	}
	if len(s.Service.Secrets) == 0 {
		return nil
	}
	if rel, err := filepath.Rel(r.Dir, r.secretsDir(s.ID)); err == nil && !strings.HasPrefix(rel, "..") {
		return fmt.Errorf("secrets: Runtime.SecretsDir %q is under Runtime.Dir %q: give it a directory outside, where no secret reaches a backup of the state", r.SecretsDir, r.Dir)
	}
	if err := mountSecrets(r.secretsDir(s.ID), s.Service.Secrets); err != nil {
		return err
	}
	for i, f := range s.Service.Secrets {
		if err := writeServiceFile(r.secretPath(s.ID, i), f, 0o400, user); err != nil {
			return fmt.Errorf("secret %w", err)
		}
	}
	return nil
}

// writeServiceFile writes f's content at path with f's mode (else def) and owner. The file is
// truncated in place: a container that has it mounted sees the new content.
func writeServiceFile(path string, f compose.File, def uint32, user specs.User) error {
	uid, gid, err := fileOwner(f, user)
	if err != nil {
		return err
	}
	mode := def
	if f.Mode != 0 {
		mode = f.Mode
	}
	fd, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	_, err = fd.Write(f.Content)
	err = errors.Join(err, fd.Chown(uid, gid), fd.Chmod(os.FileMode(mode&0o777)), fd.Close())
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	return nil
}

// mountSecrets mounts a tmpfs at dir (or resizes the one there) big enough for secrets.
func mountSecrets(dir string, secrets []compose.File) error {
	size := 64 << 10
	for _, f := range secrets {
		size += (len(f.Content) + 4095) &^ 4095
	}
	data := fmt.Sprintf("size=%d,nr_inodes=%d,mode=0700", size, len(secrets)+16)
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if mounted(dir) {
		flags |= unix.MS_REMOUNT
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, data); err != nil {
		return fmt.Errorf("secrets: mount a tmpfs at %s: %w", dir, err)
	}
	return nil
}

// unmountSecrets unmounts and removes a service's secrets dir; absent is fine.
func (r *Runtime) unmountSecrets(id string) error {
	dir := r.secretsDir(id)
	for mounted(dir) {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("secrets: unmount %s: %w", dir, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	return nil
}

// mounted reports whether dir is a mount point: on another device than its parent.
func mounted(dir string) bool {
	var st, parent unix.Stat_t
	if unix.Lstat(dir, &st) != nil || unix.Lstat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}
