package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestResolvConf(t *testing.T) {
	tests := []struct {
		name, orig, want string
	}{
		{"plain", "nameserver 10.255.255.53\n",
			"nameserver 100.100.100.100\nnameserver 10.255.255.53\nsearch mesh.internal\n"},
		{"search, options and comments kept, rotate dropped, at most three servers",
			"# from dhcp\ndomain corp.example\nsearch a.example mesh.internal\nnameserver 1.1.1.1\nnameserver 8.8.8.8\nnameserver 9.9.9.9\noptions rotate edns0 ndots:2\n",
			"nameserver 100.100.100.100\nnameserver 1.1.1.1\nnameserver 8.8.8.8\nsearch mesh.internal corp.example a.example\noptions edns0 ndots:2\n"},
		{"ours again", "nameserver 100.100.100.100\nnameserver 10.0.0.1\n",
			"nameserver 100.100.100.100\nnameserver 10.0.0.1\nsearch mesh.internal\n"},
		{"empty", "", "nameserver 100.100.100.100\nsearch mesh.internal\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(resolvConf([]byte(tt.orig), "mesh.internal"))
			head, body, _ := strings.Cut(got, "\n")
			if !strings.HasPrefix(head, resolvMarker) {
				t.Errorf("first line %q, want the marker", head)
			}
			if diff := cmp.Diff(tt.want, body); diff != "" {
				t.Errorf("resolv.conf (-want +got):\n%s", diff)
			}
		})
	}
}

// TestOSResolver: pointing writes ours and keeps the original beside the state; restoring
// puts back the exact bytes; a daemon killed while pointing puts them back on its next start.
func TestOSResolver(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	const orig = "# the machine's\nnameserver 10.255.255.53\n"
	os.WriteFile(path, []byte(orig), 0o644)
	r := &osResolver{Path: path, Backup: filepath.Join(dir, "state", "resolv.conf.orig")}
	os.Mkdir(filepath.Dir(r.Backup), 0o700)
	if err := r.point("mesh.internal"); err != nil {
		t.Fatal(err)
	}
	if err := r.point("mesh.internal"); err != nil { // again: still remembers the original
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "nameserver 100.100.100.100\nnameserver 10.255.255.53\nsearch mesh.internal\n") {
		t.Errorf("pointed resolv.conf:\n%s", b)
	}
	if bk, _ := os.ReadFile(r.Backup); string(bk) != orig {
		t.Errorf("backup %q, want %q", bk, orig)
	}
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != orig {
		t.Errorf("restored %q, want %q", b, orig)
	}
	if _, err := os.Stat(r.Backup); !os.IsNotExist(err) {
		t.Errorf("backup still there after restore: %v", err)
	}
	if err := r.restore(); err != nil {
		t.Errorf("second restore: %v", err)
	}

	// Killed while pointing: the next daemon's resolver starts from the original.
	killed := &osResolver{Path: path, Backup: r.Backup}
	killed.point("mesh.internal")
	next := &osResolver{Path: path, Backup: r.Backup}
	if err := next.point("other.internal"); err != nil {
		t.Fatal(err)
	}
	next.restore()
	if b, _ := os.ReadFile(path); string(b) != orig {
		t.Errorf("after a kill and a restart, restored %q, want %q", b, orig)
	}
	for _, e := range must(os.ReadDir(dir)) {
		if strings.Contains(e.Name(), ".meshwork-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

// TestOSResolverLink: a resolv.conf that is a link belongs to another program (systemd-
// resolved, NetworkManager); the daemon leaves it alone and says so.
func TestOSResolverLink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "stub-resolv.conf")
	os.WriteFile(target, []byte("nameserver 127.0.0.53\n"), 0o644)
	path := filepath.Join(dir, "resolv.conf")
	os.Symlink(target, path)
	r := &osResolver{Path: path, Backup: filepath.Join(dir, "orig")}
	err := r.point("mesh.internal")
	if err == nil || !strings.Contains(err.Error(), "--dns=false") {
		t.Errorf("point on a link: %v; want a refusal naming --dns=false", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "nameserver 127.0.0.53\n" {
		t.Errorf("the link's target changed: %q", b)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
