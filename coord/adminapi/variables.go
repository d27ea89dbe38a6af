package adminapi

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/secret"
	"meshwork.dev/workspace/compose"
)

// Caps on an environment's variables: they are sealed into the log with the compose file.
const (
	maxVariables     = 64
	maxVariableBytes = 64 << 10 // of all names and values together
)

// OpenVariables decrypts an environment's stored variables (nil when it has none).
func OpenVariables(k *secret.Key, e *fsm.Environment) (map[string]string, error) {
	if e.Variables == "" {
		return nil, nil
	}
	sealed, err := base64.StdEncoding.DecodeString(e.Variables)
	if err != nil {
		return nil, err
	}
	b, err := k.Open(sealed, []byte(secret.VariablesAAD(e.Name)))
	if err != nil {
		return nil, err
	}
	var vars map[string]string
	return vars, json.Unmarshal(b, &vars)
}

func checkVariableSizes(vars map[string]string) error {
	if len(vars) > maxVariables {
		return invalid("%d variables, at most %d", len(vars), maxVariables)
	}
	n := 0
	for k, v := range vars {
		n += len(k) + len(v)
	}
	if n > maxVariableBytes {
		return invalid("variables of %d bytes, at most %d: put large files in the image", n, maxVariableBytes)
	}
	return nil
}

// fromEnv maps each variable the project's secrets and configs take their content from
// (environment: VAR) to the first of them that does ("secret \"db_password\"").
func fromEnv(p *compose.Project) map[string]string {
	out := map[string]string{}
	note := func(kind string, files []compose.File) {
		for _, f := range files {
			if f.FromEnv != "" && out[f.FromEnv] == "" {
				out[f.FromEnv] = fmt.Sprintf("%s %q", kind, f.Name)
			}
		}
	}
	for _, s := range p.Services {
		note("secret", s.Secrets)
		note("config", s.Configs)
	}
	return out
}

// checkVariables refuses variables the project needs and lacks, and those it does not
// name (nothing extra is stored). Errors name variables, never their values.
func checkVariables(p *compose.Project, vars map[string]string, how string) error {
	need := fromEnv(p)
	for _, name := range slices.Sorted(maps.Keys(need)) {
		if _, ok := vars[name]; !ok {
			return invalid("environment %q: %s takes its content from variable %s, which has no value: export %s=… before %s",
				p.Name, need[name], name, name, how)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		if _, ok := need[name]; !ok {
			return invalid("environment %q: variable %s is not used by the compose file (no secret or config has environment: %s): do not send it",
				p.Name, name, name)
		}
	}
	return nil
}
