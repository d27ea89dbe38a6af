package replica

import (
	"golang.org/x/sys/unix"

	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/types"
)

// datasyncFS is raft-wal's file system with fdatasync for the segments' syncs, as etcd's
// WAL does. A segment is preallocated, so an append changes no metadata that reading the
// data back needs; fsync also wrote the inode (its mtime) with a second synchronous I/O at
// every commit. The first sync of a new segment is raft-wal's own (it also syncs the
// directory).
type datasyncFS struct{ *fs.FS }

func (d datasyncFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	f, err := d.FS.Create(dir, name, size)
	return datasync(f, true), err
}

func (d datasyncFS) OpenWriter(dir, name string) (types.WritableFile, error) {
	f, err := d.FS.OpenWriter(dir, name)
	return datasync(f, false), err
}

// datasync wraps a segment file, which it also makes its owner's alone (raft-wal creates
// segments 0644).
func datasync(f types.WritableFile, fresh bool) types.WritableFile {
	fd, ok := f.(interface{ Fd() uintptr })
	if f == nil || !ok {
		return f
	}
	unix.Fchmod(int(fd.Fd()), fileMode)
	return &datasyncFile{WritableFile: f, fd: int(fd.Fd()), fresh: fresh}
}

type datasyncFile struct {
	types.WritableFile
	fd    int
	fresh bool // not synced yet: the first sync is the file system's own
}

func (f *datasyncFile) Sync() error {
	if f.fresh {
		f.fresh = false
		return f.WritableFile.Sync()
	}
	return unix.Fdatasync(f.fd)
}
