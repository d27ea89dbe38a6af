// Package samples builds, offline, the images `make run` and the lab tests run: a dev
// workspace and a Redis server, from busybox and this machine's Debian programs (packed with
// their shared libraries; scripts/deps.sh installs them).
package samples

import (
	"io/fs"

	"meshwork.dev/workspace/image"
)

// Path is the PATH of every sample image.
const Path = "PATH=/usr/local/bin:/usr/bin:/bin"

// RedisCmd keeps Redis's data in /data: an RDB snapshot each second with a change, and the
// append-only file, so a key written survives the container's death.
var RedisCmd = []string{"redis-server", "--save", "1 1", "--appendonly", "yes", "--dir", "/data", "--protected-mode", "no"}

// Dev is a workspace image: busybox, Debian's redis-cli and curl, a prompt, and a tiny init
// that ends at once on SIGTERM (PID 1 ignores it unless it handles it, and ws stop would wait
// out its grace period) and reaps what the shells leave.
func Dev() ([]image.File, image.Config, error) {
	files, err := withHostBinaries("/usr/bin/redis-cli", "/usr/bin/curl")
	if err != nil {
		return nil, image.Config{}, err
	}
	files = append(files, image.File{Path: "/etc/profile", Data: []byte("export PS1='\\u@\\h:\\w\\$ '\ncd ~\n")})
	cfg := image.Config{Env: []string{Path},
		Cmd: []string{"/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"}}
	return files, cfg, nil
}

// Redis runs Debian's redis-server with its data in /data (mount a named volume there);
// redis-cli and busybox's sh are in it for healthchecks (`redis-cli ping`), and a user redis
// (999) for compose's `user: redis`.
func Redis() ([]image.File, image.Config, error) {
	files, err := withHostBinaries("/usr/bin/redis-server", "/usr/bin/redis-cli")
	if err != nil {
		return nil, image.Config{}, err
	}
	files = image.Merge(files,
		image.Accounts(image.User{Name: "redis", UID: 999, GID: 999, Home: "/data"}),
		[]image.File{{Path: "/data", Mode: fs.ModeDir | 0o755}})
	return files, image.Config{Cmd: RedisCmd, Env: []string{Path}, WorkingDir: "/data"}, nil
}

// withHostBinaries is busybox plus the host programs at paths with their libraries.
func withHostBinaries(paths ...string) ([]image.File, error) {
	busybox, err := image.Busybox()
	if err != nil {
		return nil, err
	}
	host, err := image.HostBinaries(paths...)
	if err != nil {
		return nil, err
	}
	return image.Merge(busybox, host), nil
}
