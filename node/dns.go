package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"meshwork.dev/overlay/meshdns"
)

// MagicDNS is the resolver address tsnet's netstack answers on for packets the machine
// sends into the mesh TUN (it is routed there with the rest of 100.64.0.0/10).
var MagicDNS = meshdns.Resolver.String()

// resolvMarker opens every resolv.conf the daemon writes: how it knows its own.
const resolvMarker = "# meshctl daemon: MagicDNS first"

// osResolver points the machine's resolver at MagicDNS by rewriting a resolv.conf, and puts
// the original back. The original is also kept in Backup, so a daemon that was killed
// restores it on its next start.
type osResolver struct {
	Path   string // the resolv.conf: /etc/resolv.conf
	Backup string // where the original waits while ours is in place

	orig []byte // the original; nil until point
}

// point writes a resolv.conf asking MagicDNS first (then the original's nameservers, which
// answer what MagicDNS does not: it replies SERVFAIL to names outside the mesh, and
// resolvers move on to the next server on SERVFAIL), searching domain first.
func (r *osResolver) point(domain string) error {
	if fi, err := os.Lstat(r.Path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		target, _ := os.Readlink(r.Path)
		return fmt.Errorf("dns: %s is a link to %s, managed by another program; not changing it (pass --dns=false)", r.Path, target)
	}
	if r.orig == nil {
		if err := r.recover(); err != nil {
			return err
		}
		orig, err := os.ReadFile(r.Path)
		if err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("dns: %w", err)
		}
		if err := writeFileAtomic(r.Backup, orig); err != nil {
			return fmt.Errorf("dns: keeping the original resolv.conf: %w", err)
		}
		r.orig = orig
	}
	if err := writeResolvConf(r.Path, resolvConf(r.orig, domain)); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	return nil
}

// restore puts the original back. Idempotent.
func (r *osResolver) restore() error {
	if r.orig == nil {
		return nil
	}
	if err := writeResolvConf(r.Path, r.orig); err != nil {
		return fmt.Errorf("dns: restoring %s: %w", r.Path, err)
	}
	r.orig = nil
	os.Remove(r.Backup)
	return nil
}

// recover restores a backup a killed daemon left, if the resolv.conf is still ours.
func (r *osResolver) recover() error {
	backup, err := os.ReadFile(r.Backup)
	if err != nil {
		return nil // nothing left behind
	}
	cur, _ := os.ReadFile(r.Path)
	if bytes.HasPrefix(cur, []byte(resolvMarker)) {
		if err := writeResolvConf(r.Path, backup); err != nil {
			return fmt.Errorf("dns: restoring %s from %s: %w", r.Path, r.Backup, err)
		}
	}
	return os.Remove(r.Backup)
}

// resolvConf is the file that asks MagicDNS first: the original's nameservers follow it
// (glibc reads at most three), domain leads the search list, the original's options stay
// except rotate, which would spread queries away from MagicDNS.
func resolvConf(orig []byte, domain string) []byte {
	var servers, search, options []string
	sc := bufio.NewScanner(bytes.NewReader(orig))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			if f[1] != MagicDNS {
				servers = append(servers, f[1])
			}
		case "search", "domain":
			search = append(search, f[1:]...)
		case "options":
			for _, o := range f[1:] {
				if o != "rotate" {
					options = append(options, o)
				}
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s, then this machine's own resolvers. The original returns on meshctl down.\n", resolvMarker)
	fmt.Fprintf(&b, "nameserver %s\n", MagicDNS)
	for _, s := range servers[:min(len(servers), 2)] {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	list := []string{domain}
	for _, s := range search {
		if s != domain {
			list = append(list, s)
		}
	}
	fmt.Fprintf(&b, "search %s\n", strings.Join(list, " "))
	if len(options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	}
	return []byte(b.String())
}

// writeResolvConf replaces path's content: by renaming a new file over it, so readers see
// the old or the new, never half; or, where path is a mount point (`ip netns exec`
// bind-mounts /etc/netns/NS/resolv.conf there) and cannot be renamed over, in place.
func writeResolvConf(path string, b []byte) error {
	if isMountPoint(path) {
		return writeInPlace(path, b)
	}
	err := writeFileAtomic(path, b)
	if errors.Is(err, os.ErrPermission) || isBusy(err) {
		return writeInPlace(path, b)
	}
	return err
}

func writeInPlace(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeFileAtomic writes b to a new file beside path and renames it over path.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".meshwork-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// isBusy reports a rename refused because path is a mount point or on another device.
func isBusy(err error) bool {
	return errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EXDEV)
}

// isMountPoint reports whether something is mounted at path (in this process's mount
// namespace).
func isMountPoint(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	abs, _ := filepath.Abs(path)
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == abs {
			return true
		}
	}
	return false
}
