// Package compose reads an environment's compose file into the services Meshwork runs: each
// with a name that becomes a DNS label (<service>.<env>.<domain>), an image, its ports, and the
// rest of what a workmachine's agent needs to run it (see Project and Spec).
package compose

import (
	"slices"
)

// Service is one service of an environment, as coord stores it.
type Service struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	Ports []int  `json:"ports,omitempty"` // container ports it serves (ports: targets and expose:)
}

// maxServices bounds an environment.
const maxServices = 64

// Parse reads a compose file for environment env into the services coord stores. It accepts
// and refuses exactly what Load does.
func Parse(env string, yaml []byte) ([]Service, error) {
	p, err := Load(env, yaml)
	if err != nil {
		return nil, err
	}
	out := make([]Service, 0, len(p.Services))
	for _, s := range p.Services {
		out = append(out, Service{Name: s.Name, Image: s.Image, Ports: slices.Clone(s.Ports)})
	}
	return out, nil
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
