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
// the line, the service, the key and what to write instead. Variables (${X}) are not
// interpolated from coord's environment, which is not the user's: a variable needs a default
// (${X:-value}).
func Load(env string, yaml []byte) (*Project, error) {
	p, err := loadProject(env, yaml)
	if err != nil {
		return nil, placed(yaml, err)
	}
	return p, nil
}

func loadProject(env string, yaml []byte) (*Project, error) {
	p, err := load(env, yaml)
	if err != nil {
		return nil, err
	}
	if len(p.Services) == 0 {
		return nil, fileErrorf([]string{"services"}, "no services; an environment needs at least one (under services)")
	}
	if len(p.Services) > maxServices {
		return nil, fileErrorf([]string{"services"}, "%d services, at most %d: split the environment in two", len(p.Services), maxServices)
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
	if err != nil {
		return nil, loadError(yaml, err)
	}
	return p, nil
}

// loadError says an error of compose-go's with the line it is on and, where Meshwork knows
// one, the fix.
func loadError(yaml []byte, err error) error {
	if ye := yamlError(yaml, err); ye != nil {
		return ye
	}
	msg := err.Error()
	for _, noise := range []string{"validating compose.yaml: ", "decoding failed due to the following error(s):\n\n"} {
		msg = strings.TrimPrefix(msg, noise)
	}
	fe := fileErrorf(schemaPath(msg), "%s", msg)
	switch {
	case strings.HasPrefix(msg, "secrets.") && strings.Contains(msg, "'content'"):
		fe.msg += ": a secret's value comes from environment: VAR (the compose spec has no content: for secrets; configs have it)"
	case strings.HasSuffix(msg, " false schema"):
		fe.msg = strings.TrimSuffix(msg, " false schema") + ": no such key in the compose spec: remove it or correct its spelling"
	}
	return fe
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
	return fileErrorf(strings.Split(where, "."), "%s: %s; %s", where, why, fix)
}

var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*`)

// refusal is the error for a key Meshwork does not run, at services.<svc>.<key>, then at
// (an item: "SYS_ADMIN", "0"), in the file.
func refusal(svc, key, why, fix string, at ...string) *fileError {
	path := append([]string{"services", svc}, strings.Split(key, ".")...)
	return fileErrorf(append(path, at...), "service %q: %s: %s; %s", svc, key, why, fix)
}
