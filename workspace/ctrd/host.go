package ctrd

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"meshwork.dev/workspace/wsnet"
)

// netFile, in a workspace's run dir, records its network config so that Delete can remove the
// namespace even when no container was ever made.
const netFile = "net.json"

// prepareHost makes s's directories, its resolv.conf, hosts and hostname, and its network.
func (r *Runtime) prepareHost(s Spec) error {
	run := r.runDir(s.Name)
	for _, d := range []string{run, filepath.Dir(r.LogPath(s.Name)), r.SocketDir(s.Name)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
	}
	if err := r.userDirs(s); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	if r.Tools != "" {
		if fi, err := os.Stat(r.Tools); err != nil || !fi.IsDir() {
			return fmt.Errorf("prepare: Runtime.Tools %q is not a directory: create it or unset it", r.Tools)
		}
	}
	nc := NetConfig(s)
	ncJSON, _ := json.Marshal(nc)
	files := map[string]string{
		"resolv.conf": resolvConf(s),
		"hosts":       hostsFile(s),
		"hostname":    s.Name + "\n",
		netFile:       string(ncJSON) + "\n",
	}
	for name, content := range files {
		if err := writeInPlace(filepath.Join(run, name), content); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
	}
	if _, err := wsnet.Setup(nc); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	return nil
}

// userDirs makes the user's home, the workspace dir and its mount point in the home (which
// runc would otherwise make root's), the user's, beneath Dir: a workspace's root can plant
// symbolic links in the shared home, and none is ever followed.
func (r *Runtime) userDirs(s Spec) error {
	home := filepath.Join("home", s.User)
	for _, d := range []string{home, filepath.Join(home, "workspaces"), filepath.Join(home, "workspaces", s.Name), filepath.Join("workspaces", s.Name)} {
		if err := mkdirOwned(r.Dir, d); err != nil {
			return fmt.Errorf("%w (remove it, and see what else the workspace's root did)", err)
		}
	}
	return nil
}

// removeHostState removes the workspace's network and run dir; absent parts are fine.
func (r *Runtime) removeHostState(name string, nc wsnet.Config) error {
	var errs []error
	if nc.Netns != "" {
		errs = append(errs, wsnet.Teardown(nc))
	}
	errs = append(errs, os.RemoveAll(r.runDir(name)))
	return errors.Join(errs...)
}

// savedNetConfig reads the network config Run recorded for name.
func (r *Runtime) savedNetConfig(name string) (wsnet.Config, bool) {
	var nc wsnet.Config
	b, err := os.ReadFile(filepath.Join(r.runDir(name), netFile))
	if err != nil || json.Unmarshal(b, &nc) != nil || nc.Validate() != nil {
		return nc, false
	}
	return nc, true
}

func resolvConf(s Spec) string {
	if len(s.DNS) == 0 {
		if b, err := os.ReadFile("/etc/resolv.conf"); err == nil {
			return string(b)
		}
	}
	var b strings.Builder
	for _, ns := range s.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if len(s.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(s.Search, " "))
	}
	return b.String()
}

func hostsFile(s Spec) string {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	names := s.Name
	for _, d := range s.Search {
		names = s.Name + "." + d + " " + names
	}
	fmt.Fprintf(&b, "%s\t%s\n", s.IPv4, names)
	if s.IPv6.IsValid() {
		fmt.Fprintf(&b, "%s\t%s\n", s.IPv6, names)
	}
	return b.String()
}

// writeInPlace replaces path's content in place when it exists (a running container has it
// bind-mounted, so renaming over it would detach the mount), else creates it.
func writeInPlace(path, content string) error {
	if cur, err := os.ReadFile(path); err == nil && string(cur) == content {
		return nil
	}
	return os.WriteFile(path, []byte(content), 0o644)
}
