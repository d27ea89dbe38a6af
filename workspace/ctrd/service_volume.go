package ctrd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
)

// makeVolumes makes s's volume dirs (named ones persist until DeleteVolumes) and returns the
// indexes of those it made now: empty, for copyUp to fill.
func (r *Runtime) makeVolumes(s ServiceSpec) ([]int, error) {
	var fresh []int
	for i := range s.Service.Volumes {
		dir := r.volumeDir(s, i)
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return nil, fmt.Errorf("volume: %w", err)
		}
		err := os.Mkdir(dir, 0o755)
		switch {
		case err == nil:
			fresh = append(fresh, i)
		case !errors.Is(err, fs.ErrExist):
			return nil, fmt.Errorf("volume: %w", err)
		}
	}
	return fresh, nil
}

// copyUp fills the new volumes of s (by index) from the image, as docker does: what the image
// holds at the volume's target, with owners and modes, so that a service that runs as a user
// of its own finds the directory its image gave that user.
func (r *Runtime) copyUp(ctx context.Context, c *containerd.Client, ctr containerd.Container, s ServiceSpec, fresh []int) error {
	if len(fresh) == 0 {
		return nil
	}
	info, err := ctr.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return fmt.Errorf("volume copy: %w", err)
	}
	mounts, err := c.SnapshotService(info.Snapshotter).Mounts(ctx, info.SnapshotKey)
	if err != nil {
		return fmt.Errorf("volume copy: rootfs mounts: %w", err)
	}
	err = mount.WithReadonlyTempMount(ctx, mounts, func(root string) error {
		src, err := os.OpenRoot(root)
		if err != nil {
			return fmt.Errorf("volume copy: %w", err)
		}
		defer src.Close()
		for _, i := range fresh {
			v := s.Service.Volumes[i]
			if err := copyTree(src, strings.TrimPrefix(path.Clean(v.Target), "/"), r.volumeDir(s, i)); err != nil {
				return fmt.Errorf("volume copy %s: %w", v.Target, err)
			}
		}
		return nil
	})
	if err != nil { // made empty again, to be filled by the next try
		for _, i := range fresh {
			os.RemoveAll(r.volumeDir(s, i))
		}
	}
	return err
}

// copyTree copies the directory rel of src (if it is one) into the dir dst, keeping owners and
// modes. No symbolic link is followed, in src or in dst.
func copyTree(src *os.Root, rel, dst string) error {
	if fi, err := src.Lstat(rel); err != nil || !fi.IsDir() {
		return nil // nothing there, or not a directory: the volume starts empty
	}
	out, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	return fs.WalkDir(src.FS(), rel, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		q, _ := filepath.Rel(rel, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		made, err := copyEntry(src, p, out, q, fi)
		if err != nil || !made {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if err := out.Lchown(q, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return nil
		}
		return out.Chmod(q, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
	})
}

// copyEntry makes q in out as p is in src: a directory, a regular file's copy, or a symbolic
// link with the same target (q "." is there already). Other kinds (devices, sockets) are left
// out: made is false.
func copyEntry(src *os.Root, p string, out *os.Root, q string, fi fs.FileInfo) (made bool, err error) {
	switch {
	case q == ".":
		return true, nil
	case fi.IsDir():
		return true, out.Mkdir(q, 0o700)
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := src.Readlink(p)
		if err != nil {
			return false, err
		}
		return true, out.Symlink(target, q)
	case fi.Mode().IsRegular():
		in, err := src.Open(p)
		if err != nil {
			return false, err
		}
		defer in.Close()
		f, err := out.OpenFile(q, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return false, err
		}
		_, err = io.Copy(f, in)
		return true, errors.Join(err, f.Close())
	}
	return false, nil
}
