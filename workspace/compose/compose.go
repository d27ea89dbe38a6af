// Package compose reads an environment's compose file into the services Meshwork runs: each
// with a name that becomes a DNS label (<service>.<env>.<domain>), an image and its ports.
package compose

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// Service is one service of an environment.
type Service struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	Ports []int  `json:"ports,omitempty"` // container ports it serves (ports: targets and expose:)
}

// maxServices bounds an environment.
const maxServices = 64

// Parse reads a compose file for environment env. Errors name the service and the fix.
// Variables (${X}) are not interpolated from coord's environment: a compose file that needs
// one must set a default (${X:-value}).
func Parse(env string, yaml []byte) ([]Service, error) {
	details := types.ConfigDetails{
		WorkingDir:  "/",
		ConfigFiles: []types.ConfigFile{{Filename: "compose.yaml", Content: yaml}},
		Environment: types.Mapping{},
	}
	p, err := loader.LoadWithContext(context.Background(), details, func(o *loader.Options) {
		o.SetProjectName(env, true)
		o.SkipResolveEnvironment = true
		o.SkipInclude = true
		o.SkipExtends = true
		o.ResolvePaths = false
	})
	if err != nil {
		return nil, fmt.Errorf("compose file: %v", err)
	}
	if len(p.Services) == 0 {
		return nil, fmt.Errorf("compose file: no services; an environment needs at least one (under services)")
	}
	if len(p.Services) > maxServices {
		return nil, fmt.Errorf("compose file: %d services, at most %d", len(p.Services), maxServices)
	}
	var out []Service
	for name, sc := range p.Services {
		s, err := service(name, sc)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Service) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func service(name string, sc types.ServiceConfig) (Service, error) {
	if !validLabel(name) {
		return Service{}, fmt.Errorf("compose file: service %q: use lower-case letters, digits and '-' (it becomes %s.<env> on the mesh)", name, name)
	}
	if sc.Image == "" {
		return Service{}, fmt.Errorf("compose file: service %q has no image: Meshwork runs images and does not build (set image:)", name)
	}
	s := Service{Name: name, Image: sc.Image}
	for _, p := range sc.Ports {
		s.Ports = append(s.Ports, int(p.Target))
	}
	for _, e := range sc.Expose {
		port, err := strconv.Atoi(strings.SplitN(e, "/", 2)[0])
		if err != nil || port < 1 || port > 65535 {
			return Service{}, fmt.Errorf("compose file: service %q: expose %q is not a port", name, e)
		}
		s.Ports = append(s.Ports, port)
	}
	slices.Sort(s.Ports)
	s.Ports = slices.Compact(s.Ports)
	return s, nil
}

func validLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
