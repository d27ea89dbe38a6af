package ctrd

import (
	"context"
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"meshwork.dev/workspace/compose"
)

// InitCommand is the hidden meshctl command that runs as pid 1 of a service with init: true:
// it starts the service's command, forwards signals to it and reaps orphans.
const InitCommand = "_init"

// serviceArgs is what the service runs, as docker compose decides it: an entrypoint given
// replaces the image's and drops its CMD; a command given replaces the CMD. With init, the
// reaper from the tools mount runs it.
func serviceArgs(ctx context.Context, img containerd.Image, s ServiceSpec) ([]string, error) {
	ic, err := img.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("image %q config: %w", img.Name(), err)
	}
	entry, cmd := ic.Config.Entrypoint, ic.Config.Cmd
	if s.Service.Entrypoint != nil {
		entry, cmd = s.Service.Entrypoint, nil
	}
	if s.Service.Command != nil {
		cmd = s.Service.Command
	}
	args := append(slices.Clone(entry), cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("service %s: image %q gives no command to run: write command: in the compose file", s.Service.Name, s.Service.Image)
	}
	if s.Service.Init {
		args = append([]string{path.Join(ToolsPath, "meshctl"), InitCommand, "--"}, args...)
	}
	return args, nil
}

// serviceSpecOpts builds s's OCI spec: the image's config, then the compose definition's
// command, environment, user, dir, hostname, limits, and our namespace and mounts.
func (r *Runtime) serviceSpecOpts(s ServiceSpec, img containerd.Image, args []string) []oci.SpecOpts {
	sv := s.Service
	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		oci.WithProcessArgs(args...),
		oci.WithHostname(serviceHostname(s)),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: ServiceNetConfig(s).NsPath()}),
		oci.WithMounts(r.serviceMounts(s)),
	}
	if len(sv.Environment) > 0 {
		env := make([]string, 0, len(sv.Environment))
		for _, k := range slices.Sorted(maps.Keys(sv.Environment)) {
			env = append(env, k+"="+sv.Environment[k])
		}
		opts = append(opts, oci.WithEnv(env))
	}
	if sv.WorkingDir != "" {
		opts = append(opts, oci.WithProcessCwd(sv.WorkingDir))
	}
	if sv.User != "" {
		opts = append(opts, oci.WithUser(sv.User))
	}
	if sv.Limits.CPUs > 0 {
		opts = append(opts, oci.WithCPUCFS(int64(sv.Limits.CPUs*cfsPeriod), cfsPeriod))
	}
	if sv.Limits.MemoryBytes > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(sv.Limits.MemoryBytes)))
	}
	return opts
}

func serviceHostname(s ServiceSpec) string { return cmpOr(s.Service.Hostname, s.Service.Name) }

// serviceMounts are s's mounts: its resolv.conf, hosts and hostname, tmpfs, volumes, configs,
// secrets (from their tmpfs) and, with init, the tools. Nothing of Meshwork's else.
func (r *Runtime) serviceMounts(s ServiceSpec) []specs.Mount {
	dir := r.serviceDir(s.ID)
	ro := func(src, dst string) specs.Mount {
		return specs.Mount{Type: "bind", Source: src, Destination: dst, Options: []string{"rbind", "ro", "nosuid", "nodev"}}
	}
	ms := []specs.Mount{
		ro(filepath.Join(dir, "resolv.conf"), "/etc/resolv.conf"),
		ro(filepath.Join(dir, "hosts"), "/etc/hosts"),
		ro(filepath.Join(dir, "hostname"), "/etc/hostname"),
	}
	for _, t := range s.Service.Tmpfs {
		ms = append(ms, tmpfsMount(t))
	}
	for i, v := range s.Service.Volumes {
		opt := "rw"
		if v.ReadOnly {
			opt = "ro"
		}
		ms = append(ms, specs.Mount{Type: "bind", Source: r.volumeDir(s, i), Destination: v.Target, Options: []string{"rbind", opt}})
	}
	for i, f := range s.Service.Configs {
		ms = append(ms, ro(r.configPath(s.ID, i), configTarget(f)))
	}
	for i, f := range s.Service.Secrets {
		ms = append(ms, ro(r.secretPath(s.ID, i), secretTarget(f)))
	}
	if s.Service.Init {
		ms = append(ms, ro(r.Tools, ToolsPath))
	}
	return ms
}

// tmpfsMount is a compose tmpfs entry, "/path" or "/path:opt,opt" as docker takes it.
func tmpfsMount(entry string) specs.Mount {
	target, opts, _ := strings.Cut(entry, ":")
	o := []string{"nosuid", "nodev", "mode=1777"}
	if opts != "" {
		o = append(o, strings.Split(opts, ",")...)
	}
	return specs.Mount{Type: "tmpfs", Source: "tmpfs", Destination: target, Options: o}
}

// configTarget is where config f appears: its target, else /<name>.
func configTarget(f compose.File) string {
	t := cmpOr(f.Target, f.Name)
	if !path.IsAbs(t) {
		t = "/" + t
	}
	return path.Clean(t)
}

// secretTarget is where secret f appears: its target, else /run/secrets/<name>; a relative
// target is under /run/secrets.
func secretTarget(f compose.File) string {
	t := cmpOr(f.Target, f.Name)
	if !path.IsAbs(t) {
		t = path.Join("/run/secrets", t)
	}
	return path.Clean(t)
}

// fileOwner is who owns a config or secret: f's uid and gid when given, else the service's
// process user (as containerd resolved it from the image's /etc/passwd; root when none).
func fileOwner(f compose.File, user specs.User) (uid, gid int, err error) {
	uid, gid = int(user.UID), int(user.GID)
	if f.UID != "" {
		if uid, err = strconv.Atoi(f.UID); err != nil || uid < 0 {
			return 0, 0, fmt.Errorf("%s: uid %q: give a number", f.Name, f.UID)
		}
	}
	if f.GID != "" {
		if gid, err = strconv.Atoi(f.GID); err != nil || gid < 0 {
			return 0, 0, fmt.Errorf("%s: gid %q: give a number", f.Name, f.GID)
		}
	}
	return uid, gid, nil
}
