package compose

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/template"
	"github.com/compose-spec/compose-go/v2/types"
)

// Load reads a compose file for environment env into the project Meshwork runs. Errors name
// the service, the key and what to write instead. Variables (${X}) are not interpolated from
// coord's environment, which is not the user's: a variable needs a default (${X:-value}).
func Load(env string, yaml []byte) (*Project, error) {
	p, err := load(env, yaml)
	if err != nil {
		return nil, err
	}
	if len(p.Services) == 0 {
		return nil, errors.New("compose file: no services; an environment needs at least one (under services)")
	}
	if len(p.Services) > maxServices {
		return nil, fmt.Errorf("compose file: %d services, at most %d: split the environment in two", len(p.Services), maxServices)
	}
	out := &Project{Name: env}
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s, err := spec(p, name, p.Services[name])
		if err != nil {
			return nil, err
		}
		out.Services = append(out.Services, s)
	}
	if err := checkProject(p, out); err != nil {
		return nil, err
	}
	return out, nil
}

// load runs compose-go: no files are read, no variables come from the environment.
func load(env string, yaml []byte) (*types.Project, error) {
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
		o.SkipConsistencyCheck = true // checkProject says it with the service's name and the fix
		o.Interpolate.Substitute = substitute
	})
	var mv missingVar
	if errors.As(err, &mv) {
		return nil, mv.refusal(err)
	}
	if err != nil && strings.Contains(err.Error(), "secrets.") && strings.Contains(err.Error(), "'content'") {
		return nil, fmt.Errorf("compose file: %v: a secret's value comes from environment: VAR (the compose spec has no content: for secrets; configs have it)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("compose file: %v", err)
	}
	return p, nil
}

// substitute interpolates like compose, but a variable with no value and no default is an error.
func substitute(s string, m template.Mapping) (string, error) {
	return template.SubstituteWithOptions(s, m, template.WithoutLogging,
		template.WithReplacementFunction(func(sub string, m template.Mapping, cfg *template.Config) (string, error) {
			v, applied, err := template.DefaultReplacementAppliedFunc(sub, m, cfg)
			if err == nil && !applied {
				return "", missingVar{name: varName.FindString(strings.TrimLeft(sub, "${"))}
			}
			return v, err
		}))
}

// missingVar is a variable with neither a value nor a default.
type missingVar struct{ name string }

func (e missingVar) Error() string { return "variable " + e.name + " has no value" }

// refusal says which service and key use the variable, from compose-go's wrapping of e
// ("error while interpolating services.web.environment.A: ...").
func (e missingVar) refusal(wrapped error) error {
	why := fmt.Sprintf("variable %s has no value and coord has no environment of yours", e.name)
	fix := fmt.Sprintf("give it a default: ${%s:-value}", e.name)
	_, where, _ := strings.Cut(wrapped.Error(), "interpolating ")
	where, _, _ = strings.Cut(where, ": ")
	if parts := strings.SplitN(where, ".", 3); len(parts) == 3 && parts[0] == "services" {
		return refusal(parts[1], parts[2], why, fix)
	}
	return fmt.Errorf("compose file: %s: %s; %s", where, why, fix)
}

var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*`)

// refusal is the error for a key Meshwork does not run.
func refusal(svc, key, why, fix string) error {
	return fmt.Errorf("compose file: service %q: %s: %s; %s", svc, key, why, fix)
}
