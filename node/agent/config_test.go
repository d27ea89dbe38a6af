package agent

import (
	"net/netip"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.Coord = "http://coord:8080"
	if err := good.Validate(); err != nil {
		t.Fatalf("DefaultConfig with a coord: %v", err)
	}
	for _, tt := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no coord", func(c *Config) { c.Coord = "" }, "--coord URL"},
		{"no state", func(c *Config) { c.State = "" }, "--state DIR"},
		{"no pull timeout", func(c *Config) { c.PullTimeout = 0 }, "pull timeout 0s"},
		{"no resync", func(c *Config) { c.Resync = -1 }, "resync"},
		{"host bits", func(c *Config) { c.AllowLAN = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")} }, "did you mean 10.0.0.0/8"},
	} {
		c := good
		tt.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error saying %q", tt.name, err, tt.want)
		}
	}
}
