package ctrd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// SetSearch rewrites workspace name's resolv.conf search line (none for an empty search) in
// place: the file is bind-mounted and keeps its inode, so the running workspace resolves with
// the new domains at once (env connect and disconnect). An unknown workspace is an error
// wrapping ErrNotFound.
func (r *Runtime) SetSearch(_ context.Context, name string, search []string) error {
	if err := r.check(); err != nil {
		return err
	}
	for _, d := range search {
		if d == "" || strings.ContainsAny(d, " \t\r\n#;") {
			return fmt.Errorf("ws search %s: domain %q: give a domain name such as dev.mesh.internal", name, d)
		}
	}
	if !labelRE.MatchString(name) {
		return fmt.Errorf("ws search: workspace name %q: give a DNS label (a-z, 0-9, -)", name)
	}
	defer r.lock(name)()
	path := filepath.Join(r.runDir(name), "resolv.conf")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ws search %s: %w", name, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("ws search %s: %w", name, err)
	}
	if err := writeInPlace(path, withSearch(string(b), search)); err != nil {
		return fmt.Errorf("ws search %s: %w", name, err)
	}
	return nil
}

// withSearch is resolv.conf with its search (and domain, which search overrides) lines
// replaced by one for search, at the end.
func withSearch(conf string, search []string) string {
	var b strings.Builder
	for l := range strings.Lines(conf) {
		if f := strings.Fields(l); len(f) > 0 && (f[0] == "search" || f[0] == "domain") {
			continue
		}
		b.WriteString(l)
		if !strings.HasSuffix(l, "\n") {
			b.WriteByte('\n')
		}
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	return b.String()
}
