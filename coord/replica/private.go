package replica

import (
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// Everything in a state directory is its owner's alone: the Raft log and snapshots hold
// every record (API key hashes, sealed secrets), the TLS folder the cluster CA's key. The
// libraries underneath create files 0644 and folders 0755; these fix that.
const (
	fileMode = 0o600
	dirMode  = 0o700
)

// private sets every file under dir to 0600 and every folder to 0700 (also what an older
// build left).
func private(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := fs.FileMode(fileMode)
		if d.IsDir() {
			mode = dirMode
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		return os.Chmod(path, mode)
	})
}

// privateSnapshots is a snapshot store whose snapshots are made private once written.
type privateSnapshots struct {
	*raft.FileSnapshotStore
	dir string // the store's folder of snapshots
}

func (s privateSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return privateSink{SnapshotSink: sink, dir: s.dir}, nil
}

type privateSink struct {
	raft.SnapshotSink
	dir string
}

func (p privateSink) Close() error {
	if err := p.SnapshotSink.Close(); err != nil {
		return err
	}
	return private(filepath.Join(p.dir, p.ID()))
}
