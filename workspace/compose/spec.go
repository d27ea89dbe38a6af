package compose

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
)

// spec turns one compose service into what Meshwork runs, or refuses it.
func spec(p *types.Project, name string, sc types.ServiceConfig) (Spec, error) {
	if err := refuse(name, sc); err != nil {
		return Spec{}, err
	}
	s := Spec{
		Name:       name,
		Image:      sc.Image,
		Command:    sc.Command,
		Entrypoint: sc.Entrypoint,
		User:       sc.User,
		WorkingDir: sc.WorkingDir,
		Tmpfs:      sc.Tmpfs,
		Init:       sc.Init != nil && *sc.Init,
		Hostname:   sc.Hostname,
	}
	if len(sc.Labels) > 0 {
		s.Labels = maps.Clone(map[string]string(sc.Labels))
	}
	steps := []func(*Spec, *types.Project, types.ServiceConfig) error{
		environment, ports, healthcheck, dependsOn, restart, limits, networks, volumes, configs, secrets,
	}
	for _, step := range steps {
		if err := step(&s, p, sc); err != nil {
			return Spec{}, err
		}
	}
	return s, nil
}

func environment(s *Spec, _ *types.Project, sc types.ServiceConfig) error {
	for _, k := range slices.Sorted(maps.Keys(sc.Environment)) {
		v := sc.Environment[k]
		if v == nil {
			return refusal(s.Name, "environment", fmt.Sprintf("%s has no value and coord has no environment of yours", k),
				fmt.Sprintf("write %s=value (or %s: ${%s:-value})", k, k, k), k)
		}
		if s.Environment == nil {
			s.Environment = map[string]string{}
		}
		s.Environment[k] = *v
	}
	return nil
}

func ports(s *Spec, _ *types.Project, sc types.ServiceConfig) error {
	for _, p := range sc.Ports {
		s.Ports = append(s.Ports, int(p.Target))
	}
	for _, e := range sc.Expose {
		port, err := strconv.Atoi(strings.SplitN(e, "/", 2)[0])
		if err != nil || port < 1 || port > 65535 {
			return refusal(s.Name, "expose", fmt.Sprintf("%q is not a port", e), "write a port number from 1 to 65535", e)
		}
		s.Ports = append(s.Ports, port)
	}
	slices.Sort(s.Ports)
	s.Ports = slices.Compact(s.Ports)
	return nil
}

func healthcheck(s *Spec, _ *types.Project, sc types.ServiceConfig) error {
	h := sc.HealthCheck
	if h == nil || h.Disable || len(h.Test) == 0 || h.Test[0] == "NONE" {
		return nil
	}
	dur := func(d *types.Duration) time.Duration {
		if d == nil {
			return 0
		}
		return time.Duration(*d)
	}
	s.Healthcheck = &Healthcheck{
		Test:        h.Test,
		Interval:    dur(h.Interval),
		Timeout:     dur(h.Timeout),
		StartPeriod: dur(h.StartPeriod),
	}
	if h.Retries != nil {
		if *h.Retries > 1<<20 {
			return refusal(s.Name, "healthcheck.retries", fmt.Sprintf("%d retries", *h.Retries), "write at most 1048576")
		}
		s.Healthcheck.Retries = int(*h.Retries)
	}
	return nil
}

func dependsOn(s *Spec, p *types.Project, sc types.ServiceConfig) error {
	for _, dep := range slices.Sorted(maps.Keys(sc.DependsOn)) {
		d := sc.DependsOn[dep]
		if _, ok := p.Services[dep]; !ok {
			return refusal(s.Name, "depends_on", fmt.Sprintf("no service %q in this file", dep), "name a service defined under services:", dep)
		}
		c := Condition(d.Condition)
		switch c {
		case "":
			c = ServiceStarted
		case ServiceStarted, ServiceHealthy, ServiceCompletedSuccessfully:
		default:
			return refusal(s.Name, "depends_on."+dep+".condition", fmt.Sprintf("unknown condition %q", d.Condition),
				"write service_started, service_healthy or service_completed_successfully")
		}
		if s.DependsOn == nil {
			s.DependsOn = map[string]Condition{}
		}
		s.DependsOn[dep] = c
	}
	return nil
}

func restart(s *Spec, _ *types.Project, sc types.ServiceConfig) error {
	policy, n, hasN := strings.Cut(sc.Restart, ":")
	switch {
	case sc.Restart == "":
		s.Restart = Restart{Policy: "no"}
		return nil
	case !hasN && (policy == "no" || policy == "always" || policy == "unless-stopped" || policy == "on-failure"):
		s.Restart = Restart{Policy: policy}
		return nil
	case hasN && policy == "on-failure":
		if v, err := strconv.Atoi(n); err == nil && v >= 0 {
			s.Restart = Restart{Policy: policy, MaxRetries: v}
			return nil
		}
	}
	return refusal(s.Name, "restart", fmt.Sprintf("%q is not a restart policy", sc.Restart),
		"write no, always, on-failure, on-failure:N or unless-stopped")
}

func limits(s *Spec, _ *types.Project, sc types.ServiceConfig) error {
	if sc.Deploy == nil || sc.Deploy.Resources.Limits == nil {
		return nil
	}
	l := sc.Deploy.Resources.Limits
	if l.NanoCPUs < 0 || l.MemoryBytes < 0 {
		return refusal(s.Name, "deploy.resources.limits", "a limit is negative", "write positive cpus and memory")
	}
	s.Limits = Limits{CPUs: float64(l.NanoCPUs), MemoryBytes: int64(l.MemoryBytes)}
	return nil
}

func networks(s *Spec, _ *types.Project, sc types.ServiceConfig) error {
	if s.Hostname != "" && !validLabel(s.Hostname) {
		return refusal(s.Name, "hostname", fmt.Sprintf("%q is not a DNS label", s.Hostname), "use 1-63 lower-case letters, digits and '-'")
	}
	for _, net := range slices.Sorted(maps.Keys(sc.Networks)) {
		n := sc.Networks[net]
		if n == nil {
			continue
		}
		for _, a := range n.Aliases {
			if !validLabel(a) {
				return refusal(s.Name, "networks.aliases", fmt.Sprintf("%q is not a DNS label", a), "use 1-63 lower-case letters, digits and '-'").
					at("services", s.Name, "networks", net, "aliases", a)
			}
			s.Aliases = append(s.Aliases, a)
		}
	}
	slices.Sort(s.Aliases)
	s.Aliases = slices.Compact(s.Aliases)
	return nil
}

func volumes(s *Spec, p *types.Project, sc types.ServiceConfig) error {
	for i, v := range sc.Volumes {
		if v.Type == types.VolumeTypeTmpfs {
			s.Tmpfs = append(s.Tmpfs, v.Target)
			continue
		}
		if _, ok := p.Volumes[v.Source]; v.Source != "" && !ok {
			return refusal(s.Name, "volumes", fmt.Sprintf("no volume %q under the top-level volumes:", v.Source),
				fmt.Sprintf("add it: volumes: {%s: {}}", v.Source), strconv.Itoa(i))
		}
		s.Volumes = append(s.Volumes, Mount{Volume: v.Source, Target: v.Target, ReadOnly: v.ReadOnly})
	}
	return nil
}

func configs(s *Spec, p *types.Project, sc types.ServiceConfig) error {
	for i, r := range sc.Configs {
		c, ok := p.Configs[r.Source]
		if !ok {
			return refusal(s.Name, "configs", fmt.Sprintf("no config %q under the top-level configs:", r.Source), "define it with content:", strconv.Itoa(i))
		}
		f, err := file(s.Name, "configs", types.FileReferenceConfig(r), types.FileObjectConfig(c), "/"+r.Source)
		if err != nil {
			return err
		}
		s.Configs = append(s.Configs, f)
	}
	return nil
}

func secrets(s *Spec, p *types.Project, sc types.ServiceConfig) error {
	for i, r := range sc.Secrets {
		c, ok := p.Secrets[r.Source]
		if !ok {
			return refusal(s.Name, "secrets", fmt.Sprintf("no secret %q under the top-level secrets:", r.Source), "define it with environment: or content:", strconv.Itoa(i))
		}
		f, err := file(s.Name, "secrets", types.FileReferenceConfig(r), types.FileObjectConfig(c), "/run/secrets/"+r.Source)
		if err != nil {
			return err
		}
		s.Secrets = append(s.Secrets, f)
	}
	return nil
}

// file is a config or secret as mounted; its content never enters an error.
func file(svc, key string, r types.FileReferenceConfig, c types.FileObjectConfig, target string) (File, error) {
	switch {
	case c.File != "":
		return File{}, refusal(svc, key, fmt.Sprintf("%s comes from a file (file:) and coord has no files of yours", r.Source),
			"write it inline with content: or from a variable with environment:").at(key, r.Source, "file")
	case bool(c.External):
		return File{}, refusal(svc, key, fmt.Sprintf("%s is external", r.Source), "write it inline with content: or from a variable with environment:").
			at(key, r.Source, "external")
	}
	f := File{Name: r.Source, Target: target, UID: r.UID, GID: r.GID, FromEnv: c.Environment}
	if c.Content != "" {
		f.Content = Sensitive(c.Content)
	}
	if r.Target != "" {
		f.Target = r.Target
	}
	if r.Mode != nil {
		f.Mode = uint32(*r.Mode)
	}
	return f, nil
}

// checkProject checks what spans services: named volumes and the dependency graph.
func checkProject(p *types.Project, out *Project) error {
	for _, name := range slices.Sorted(maps.Keys(p.Volumes)) {
		v := p.Volumes[name]
		if v.Driver != "" && v.Driver != "local" || len(v.DriverOpts) > 0 || bool(v.External) {
			return fileErrorf([]string{"volumes", name}, "volume %q: Meshwork keeps volumes on the workmachine; remove driver, driver_opts and external", name)
		}
		out.Volumes = append(out.Volumes, name)
	}
	_, err := StartOrder(out)
	return err
}
