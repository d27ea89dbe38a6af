package compose

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestStartOrder(t *testing.T) {
	p, err := Load("env", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	got, err := StartOrder(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []Step{
		{Service: "cache"},
		{Service: "redis"},
		{Service: "migrate", Wait: map[string]Condition{"redis": ServiceStarted}},
		{Service: "api", Wait: map[string]Condition{"redis": ServiceHealthy, "migrate": ServiceCompletedSuccessfully, "cache": ServiceStarted}},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("StartOrder (-want +got):\n%s", diff)
	}
}

func TestStartOrderDependenciesFirst(t *testing.T) {
	// a chain declared backwards and a diamond: every service after all it depends on.
	p := &Project{Services: []Spec{
		{Name: "a", DependsOn: map[string]Condition{"b": ServiceStarted, "c": ServiceHealthy}},
		{Name: "b", DependsOn: map[string]Condition{"d": ServiceStarted}},
		{Name: "c", DependsOn: map[string]Condition{"d": ServiceCompletedSuccessfully}},
		{Name: "d"},
		{Name: "e"},
	}}
	got, err := StartOrder(p)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got {
		names = append(names, s.Service)
	}
	if want := []string{"d", "b", "c", "a", "e"}; !cmp.Equal(want, names) {
		t.Errorf("order = %v; want %v", names, want)
	}
}

func TestStartOrderCycle(t *testing.T) {
	p := &Project{Services: []Spec{
		{Name: "a"},
		{Name: "b", DependsOn: map[string]Condition{"c": ServiceStarted}},
		{Name: "c", DependsOn: map[string]Condition{"b": ServiceHealthy, "a": ServiceStarted}},
	}}
	_, err := StartOrder(p)
	if want := `compose file: service "b": depends_on: a dependency cycle: b -> c -> b; remove one of these dependencies`; err == nil || err.Error() != want {
		t.Errorf("StartOrder = %v; want %q", err, want)
	}
}
