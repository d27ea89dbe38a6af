package ctrd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// UserUID is the uid and gid of every workspace's user (Spec.User).
const UserUID = 1000

// The container paths that Run bind-mounts from the workspace's run dir.
const (
	passwdPath = "/etc/passwd"
	groupPath  = "/etc/group"
)

// An account is a user as a process inside the workspace runs: its ids, home and login shell.
type account struct {
	Name     string
	UID, GID uint32
	Home     string
	Shell    string
}

// userAccount is the workspace user's account, with the shell it gets by default.
func userAccount(name, shell string) account {
	return account{Name: name, UID: UserUID, GID: UserUID, Home: "/home/" + name, Shell: shell}
}

func (a account) passwdLine() string {
	return fmt.Sprintf("%s:x:%d:%d::%s:%s", a.Name, a.UID, a.GID, a.Home, a.Shell)
}

// Without an /etc/passwd or /etc/group in the image, these are the lines the user's are added to.
const (
	rootPasswd = "root:x:0:0:root:/root:/bin/sh\n"
	rootGroup  = "root:x:0:\n"
)

// withUser returns an /etc/passwd (or /etc/group: set group) with u's line appended and every
// line taking its name or id (field 3 of either file) dropped. Empty input gets root's line.
func withUser(file string, u account, group bool) string {
	line, root := u.passwdLine(), rootPasswd
	if group {
		line, root = fmt.Sprintf("%s:x:%d:", u.Name, u.GID), rootGroup
	}
	if strings.TrimSpace(file) == "" {
		file = root
	}
	id := strconv.Itoa(int(u.UID))
	if group {
		id = strconv.Itoa(int(u.GID))
	}
	var b strings.Builder
	for l := range strings.Lines(file) {
		f := strings.Split(strings.TrimRight(l, "\n"), ":")
		if f[0] == u.Name || len(f) >= 3 && f[2] == id {
			continue
		}
		b.WriteString(l)
		if !strings.HasSuffix(l, "\n") {
			b.WriteByte('\n')
		}
	}
	b.WriteString(line + "\n")
	return b.String()
}

// lookupPasswd finds the account named name in an /etc/passwd.
func lookupPasswd(file, name string) (account, bool) {
	for l := range strings.Lines(file) {
		f := strings.Split(strings.TrimRight(l, "\n"), ":")
		if len(f) != 7 || f[0] != name {
			continue
		}
		uid, uerr := strconv.ParseUint(f[2], 10, 32)
		gid, gerr := strconv.ParseUint(f[3], 10, 32)
		if uerr != nil || gerr != nil {
			return account{}, false
		}
		return account{Name: name, UID: uint32(uid), GID: uint32(gid), Home: f[5], Shell: f[6]}, true
	}
	return account{}, false
}

// ensureUsers writes the passwd and group files a container's spec bind-mounts, when they are
// missing: the container rootfs's own files with the workspace user added. Containers made
// before these mounts existed are left as they are.
func (r *Runtime) ensureUsers(ctx context.Context, c *containerd.Client, ctr containerd.Container, s Spec) error {
	run := r.runDir(s.Name)
	pw, gr := filepath.Join(run, "passwd"), filepath.Join(run, "group")
	if exists(pw) && exists(gr) {
		return nil
	}
	sp, err := ctr.Spec(ctx)
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	if !mountsAt(sp.Mounts, passwdPath) {
		r.logf("ws %s: container predates the user's passwd entry; exec as %s will lack one", s.Name, s.User)
		return nil
	}
	info, err := ctr.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	mounts, err := c.SnapshotService(info.Snapshotter).Mounts(ctx, info.SnapshotKey)
	if err != nil {
		return fmt.Errorf("users: rootfs mounts: %w", err)
	}
	var passwd, group, shell string
	err = mount.WithReadonlyTempMount(ctx, mounts, func(root string) error {
		passwd, group, shell = readRootfsUsers(root)
		return nil
	})
	if err != nil {
		return fmt.Errorf("users: read the image's /etc/passwd: %w", err)
	}
	u := userAccount(s.User, shell)
	return errors.Join(
		writeInPlace(pw, withUser(passwd, u, false)),
		writeInPlace(gr, withUser(group, u, true)),
	)
}

// readRootfsUsers reads a rootfs's /etc/passwd and /etc/group (empty when absent) and picks the
// user's shell: /bin/bash when the image has one, else /bin/sh. Symlinks may not leave root.
func readRootfsUsers(dir string) (passwd, group, shell string) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", "", "/bin/sh"
	}
	defer root.Close()
	p, _ := root.ReadFile(strings.TrimPrefix(passwdPath, "/"))
	g, _ := root.ReadFile(strings.TrimPrefix(groupPath, "/"))
	shell = "/bin/sh"
	if _, err := root.Lstat("bin/bash"); err == nil {
		shell = "/bin/bash"
	}
	return string(p), string(g), shell
}

// containerAccount reads the account named name from the /etc/passwd of the running container
// whose init is pid, its shell replaced by /bin/sh when the container has no such file.
func containerAccount(pid int, name string) (account, bool) {
	root, err := os.OpenRoot(fmt.Sprintf("/proc/%d/root", pid))
	if err != nil {
		return account{}, false
	}
	defer root.Close()
	b, err := root.ReadFile(strings.TrimPrefix(passwdPath, "/"))
	if err != nil {
		return account{}, false
	}
	a, ok := lookupPasswd(string(b), name)
	if !ok {
		return a, false
	}
	if _, err := root.Lstat(strings.TrimPrefix(a.Shell, "/")); err != nil || !filepath.IsAbs(a.Shell) {
		a.Shell = "/bin/sh"
	}
	return a, true
}

func mountsAt(ms []specs.Mount, dst string) bool {
	for _, m := range ms {
		if m.Destination == dst {
			return true
		}
	}
	return false
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// ErrSymlink is what the agent refuses: a symbolic link where it makes or hands over a
// directory or file of a workspace user's (one planted from inside a workspace, whose root
// can write the shared home).
var ErrSymlink = errors.New("is a symbolic link (planted from inside a workspace?); refusing to follow it")

// mkdirOwned makes base/rel, one directory at a time, never following a symbolic link nor
// leaving base, with the user's uid owning the last one. A dir that exists keeps its owner,
// unless root owns it: workspaces made before the user existed left their homes root-owned,
// and the user could not write there.
func mkdirOwned(base, rel string) error {
	f, err := mkdirBeneath(base, rel)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != 0 {
		return nil
	}
	return f.Chown(UserUID, UserUID) // fchown: the directory opened, whatever its name now is
}

// mkdirBeneath makes and opens base/rel component by component: each is opened with
// O_NOFOLLOW relative to its parent's descriptor, so no symbolic link is followed, and ".."
// is refused, so nothing outside base is made or opened.
func mkdirBeneath(base, rel string) (*os.File, error) {
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	dir, err := unix.Open(base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: base, Err: err}
	}
	done := ""
	for _, name := range strings.Split(rel, "/") {
		done = filepath.Join(done, name)
		fd, err := openSubdir(dir, name)
		unix.Close(dir)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(base, done), err)
		}
		dir = fd
	}
	return os.NewFile(uintptr(dir), filepath.Join(base, rel)), nil
}

// openSubdir makes the directory name in dir when absent and opens it, refusing a symbolic
// link, a non-directory and names that are not one plain component.
func openSubdir(dir int, name string) (int, error) {
	if name == "" || name == "." || name == ".." {
		return -1, fmt.Errorf("path component %q: want a plain name", name)
	}
	if err := unix.Mkdirat(dir, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ELOOP):
		return -1, ErrSymlink
	case errors.Is(err, unix.ENOTDIR):
		var st unix.Stat_t
		if unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return -1, ErrSymlink
		}
		return -1, errors.New("is not a directory")
	}
	return fd, err
}

// GiveToUser makes the file at path (a socket the agent just made in a directory a workspace
// can write) the workspace user's, with mode. A symbolic link or a file of another kind put
// there in the meantime is refused: only the inode found, never what a link names, is changed.
func GiveToUser(path string, kind fs.FileMode, mode fs.FileMode) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if got := fileKind(st.Mode); got != kind {
		if got == fs.ModeSymlink {
			return fmt.Errorf("%s: %w", path, ErrSymlink)
		}
		return fmt.Errorf("%s is a %v, not the %v made there; refusing to hand it over", path, got, kind)
	}
	if err := unix.Fchownat(fd, "", UserUID, UserUID, unix.AT_EMPTY_PATH); err != nil {
		return &fs.PathError{Op: "chown", Path: path, Err: err}
	}
	// chmod through the descriptor's /proc link: the inode opened, not a name resolved again.
	if err := os.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), mode); err != nil {
		return &fs.PathError{Op: "chmod", Path: path, Err: err}
	}
	return nil
}

// fileKind is the type bits of a stat mode as an fs.FileMode (0 for a regular file).
func fileKind(m uint32) fs.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFLNK:
		return fs.ModeSymlink
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFREG:
		return 0
	}
	return fs.ModeIrregular
}
