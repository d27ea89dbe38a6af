package ctrd

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestUserDirsRefuseSymlinks: a workspace's root plants symbolic links in the shared home (or
// the home itself is one); the agent's set-up of another workspace neither creates nor
// chowns anything outside, and its error names the link it refused.
func TestUserDirsRefuseSymlinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (the agent chowns to the workspace user)")
	}
	s := Spec{User: "alice", Name: "api"}
	for _, tt := range []struct {
		name, link string // link, under Dir, is planted pointing at the target
		inside     bool   // the target is inside the home (still refused: no link is followed)
	}{
		{name: "the workspace's mount point", link: "home/alice/workspaces/api"},
		{name: "the workspaces directory", link: "home/alice/workspaces"},
		{name: "the home itself", link: "home/alice"},
		{name: "the workspace dir", link: "workspaces/api"},
		{name: "a link that stays in the home", link: "home/alice/workspaces/api", inside: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &Runtime{Dir: filepath.Join(t.TempDir(), "state")}
			outside := t.TempDir() // root's, like /etc
			target := outside
			if tt.inside {
				target = filepath.Join(r.Dir, "home", "alice", "elsewhere")
				mustMkdir(t, target)
			}
			mustMkdir(t, filepath.Dir(filepath.Join(r.Dir, tt.link)))
			if err := os.Symlink(target, filepath.Join(r.Dir, tt.link)); err != nil {
				t.Fatal(err)
			}
			err := r.userDirs(s)
			if !errors.Is(err, ErrSymlink) || !strings.Contains(err.Error(), filepath.Join(r.Dir, tt.link)+":") {
				t.Errorf("userDirs = %v; want it to refuse the link %s", err, tt.link)
			}
			for _, dir := range []string{outside, target} {
				if ents, _ := os.ReadDir(dir); len(ents) != 0 {
					t.Errorf("made %s in %s, behind the link", ents[0].Name(), dir)
				}
				if uid := owner(t, dir); uid != 0 {
					t.Errorf("%s, behind the link, is now uid %d's", dir, uid)
				}
			}
		})
	}
}

// TestUserDirs: without links, the dirs are made the user's; a root-owned one is handed over,
// one another uid owns is left as it is.
func TestUserDirs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (the agent chowns to the workspace user)")
	}
	r := &Runtime{Dir: filepath.Join(t.TempDir(), "state")}
	home := filepath.Join(r.Dir, "home", "alice")
	mustMkdir(t, home) // root's: handed over
	kept := filepath.Join(home, "workspaces")
	mustMkdir(t, kept)
	if err := os.Chown(kept, 1234, 1234); err != nil {
		t.Fatal(err)
	}
	if err := r.userDirs(Spec{User: "alice", Name: "api"}); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]uint32{home: UserUID, kept: 1234, filepath.Join(kept, "api"): UserUID,
		r.wsDir("api"): UserUID, filepath.Join(r.Dir, "home"): 0} {
		if uid := owner(t, dir); uid != want {
			t.Errorf("%s: uid %d, want %d", dir, uid, want)
		}
	}
	if err := r.userDirs(Spec{User: "../../etc", Name: "api"}); err == nil {
		t.Errorf("a user name climbing out of home/ was taken")
	}
}

// TestGiveToUserRefusesSymlink: the socket the agent hands to the user is swapped for a link
// (the directory is the workspace's to write): the link's target keeps its owner and mode.
func TestGiveToUserRefusesSymlink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (the agent chowns to the workspace user)")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := GiveToUser(sock, fs.ModeSocket, 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(sock); err != nil || owner(t, sock) != UserUID || fi.Mode().Perm() != 0o600 {
		t.Errorf("the socket: %v, uid %d, %v", fi.Mode(), owner(t, sock), err)
	}

	secret := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(secret, []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	os.Remove(sock)
	if err := os.Symlink(secret, sock); err != nil {
		t.Fatal(err)
	}
	if err := GiveToUser(sock, fs.ModeSocket, 0o600); !errors.Is(err, ErrSymlink) {
		t.Errorf("GiveToUser on a link = %v, want ErrSymlink", err)
	}
	if fi, _ := os.Stat(secret); owner(t, secret) != 0 || fi.Mode().Perm() != 0o640 {
		t.Errorf("the link's target changed: uid %d, %v", owner(t, secret), fi.Mode())
	}
	os.Remove(sock)
	if err := os.WriteFile(sock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := GiveToUser(sock, fs.ModeSocket, 0o600); err == nil || owner(t, sock) != 0 {
		t.Errorf("GiveToUser took a regular file for the socket: %v", err)
	}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func owner(t *testing.T, path string) uint32 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}
