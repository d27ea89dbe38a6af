package ctrd

import (
	"context"
	"path/filepath"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ToolsPath is where Runtime.Tools appears inside every workspace, read-only.
const ToolsPath = "/.meshwork"

// IdleArgs is what a workspace runs when its image names no command.
var IdleArgs = []string{"sleep", "2147483647"}

const cfsPeriod = 100_000 // µs

// specOpts builds s's OCI spec: the image's config, then our namespace, mounts, env and limits.
func (r *Runtime) specOpts(s Spec, img containerd.Image) []oci.SpecOpts {
	home := "/home/" + s.User
	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		withDefaultArgs(IdleArgs),
		oci.WithHostname(s.Name),
		oci.WithEnv([]string{"HOME=" + home, "USER=" + s.User}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: NetConfig(s).NsPath()}),
		oci.WithMounts(r.mounts(s)),
	}
	if r.Tools != "" {
		opts = append(opts, withOnPath(ToolsPath))
	}
	if s.CPU > 0 {
		opts = append(opts, oci.WithCPUCFS(int64(s.CPU*cfsPeriod), cfsPeriod))
	}
	if s.Memory > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(s.Memory)))
	}
	return opts
}

func (r *Runtime) mounts(s Spec) []specs.Mount {
	home := "/home/" + s.User
	run := r.runDir(s.Name)
	bind := func(src, dst string) specs.Mount {
		return specs.Mount{Type: "bind", Source: src, Destination: dst, Options: []string{"rbind", "rw"}}
	}
	ms := []specs.Mount{
		bind(r.homeDir(s.User), home),
		bind(r.wsDir(s.Name), home+"/workspaces/"+s.Name),
		bind(filepath.Join(run, "resolv.conf"), "/etc/resolv.conf"),
		bind(filepath.Join(run, "hosts"), "/etc/hosts"),
		bind(filepath.Join(run, "hostname"), "/etc/hostname"),
		bind(filepath.Join(run, "passwd"), passwdPath),
		bind(filepath.Join(run, "group"), groupPath),
		bind(r.SocketDir(s.Name), SocketsPath),
	}
	if r.Tools != "" {
		ms = append(ms, specs.Mount{Type: "bind", Source: r.Tools, Destination: ToolsPath, Options: []string{"rbind", "ro", "nosuid", "nodev"}})
	}
	return ms
}

// withDefaultArgs sets the process args when the image gave none.
func withDefaultArgs(args []string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Process != nil && len(s.Process.Args) == 0 {
			s.Process.Args = append([]string(nil), args...)
		}
		return nil
	}
}

// withOnPath puts dir last on the process's PATH (meshctl in a workspace is found by name).
func withOnPath(dir string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Process == nil {
			return nil
		}
		env := s.Process.Env
		for i, kv := range env {
			if path, ok := strings.CutPrefix(kv, "PATH="); ok {
				env[i] = "PATH=" + path + ":" + dir
				return nil
			}
		}
		s.Process.Env = append(env, defaultPath+":"+dir)
		return nil
	}
}
