package agent

import (
	"fmt"
	"os"
	"syscall"

	"meshwork.dev/workspace/wsnet"
)

// nsID is a network namespace's identity: the device and inode of its nsfs file. A namespace
// made anew under the same name has another, so what was bound in the old one is known stale.
type nsID struct{ dev, ino uint64 }

// netnsID is the identity of the namespace c names (its file under wsnet.NetnsDir).
func netnsID(c wsnet.Config) (nsID, error) {
	fi, err := os.Stat(c.NsPath())
	if err != nil {
		return nsID{}, fmt.Errorf("network namespace of %s: %w", c.Netns, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nsID{}, fmt.Errorf("network namespace of %s: no inode", c.Netns)
	}
	return nsID{dev: uint64(st.Dev), ino: st.Ino}, nil
}
