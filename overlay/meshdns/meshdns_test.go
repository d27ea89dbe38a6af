package meshdns

import "testing"

func TestNames(t *testing.T) {
	for _, c := range []struct{ in, label, domain string }{
		{"api", "api", ""},
		{"api.mesh.internal", "api", "mesh.internal"},
		{"laptop.corp.example.", "laptop", "corp.example"},
		{"", "", ""},
	} {
		if got := Label(c.in); got != c.label {
			t.Errorf("Label(%q) = %q, want %q", c.in, got, c.label)
		}
		if got := DomainOf(c.in); got != c.domain {
			t.Errorf("DomainOf(%q) = %q, want %q", c.in, got, c.domain)
		}
	}
}
