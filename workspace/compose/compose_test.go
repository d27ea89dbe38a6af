package compose

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	got, err := Parse("staging", []byte(`
services:
  postgres:
    image: postgres:16
    expose: ["5432"]
  api:
    image: registry.example/api:1.2
    ports: ["8080:8080", "9090"]
    environment:
      DB: postgres://postgres:5432
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Service{
		{Name: "api", Image: "registry.example/api:1.2", Ports: []int{8080, 9090}},
		{Name: "postgres", Image: "postgres:16", Ports: []int{5432}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestParseRejects(t *testing.T) {
	for yaml, want := range map[string]string{
		`services: [`:                                               "compose file",
		`services: {}`:                                              "no services",
		"services:\n  Web_1:\n    image: x\n":                       "lower-case",
		"services:\n  web:\n    build: .\n":                         "no image",
		"services:\n  web:\n    image: x\n    bogus: 1\n":           "bogus",
		"services:\n  web:\n    image: x\n    expose: [\"http\"]\n": "not a port",
	} {
		if _, err := Parse("env", []byte(yaml)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v; want an error about %q", yaml, err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("services:\n  web:\n    image: nginx\n")
	f.Fuzz(func(t *testing.T, s string) { Parse("env", []byte(s)) })
}
