package wsnet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// currentNS returns the network namespace of the calling goroutine's thread: the "host" for
// Setup, Teardown and the NAT functions. A caller inside a lab host's Do gets that host.
func currentNS() (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h, err := netns.Get()
	if err != nil {
		return h, fmt.Errorf("current network namespace: %w", err)
	}
	return h, nil
}

// inNS runs f on a fresh OS thread switched into ns. The thread is never handed back to the
// Go scheduler (the goroutine exits still locked, so the runtime discards it): no other code
// ever runs in a namespace it did not expect, even if switching back would have failed.
func inNS(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked on purpose: see above
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter namespace: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// InNS is inNS for packages that set up more inside a namespace (overlay/egress).
func InNS(ns netns.NsHandle, f func() error) error { return inNS(ns, f) }

// CurrentNS is currentNS for other packages.
func CurrentNS() (netns.NsHandle, error) { return currentNS() }

// ensureNetns opens the named namespace, creating it when absent.
func ensureNetns(name string) (netns.NsHandle, error) {
	if h, err := netns.GetFromName(name); err == nil {
		return h, nil
	}
	if err := createNetns(name); err != nil {
		return netns.None(), err
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		return h, fmt.Errorf("open netns %s: %w", name, err)
	}
	return h, nil
}

// createNetns makes a new network namespace bind-mounted at NetnsDir/name. The unshare happens
// on a thread that is thrown away afterwards.
func createNetns(name string) error {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread ends up in the new namespace
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		removeNetns(name) // a half-made mount point
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	return nil
}

// removeNetns unmounts and removes NetnsDir/name; absent is fine.
func removeNetns(name string) error {
	p := filepath.Join(NetnsDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// writeSysctl writes /proc/sys/<key> inside ns (key as "net/ipv4/ip_forward").
func writeSysctl(ns netns.NsHandle, key, value string) error {
	return inNS(ns, func() error { return writeProc(key, value) })
}

func writeProc(key, value string) error {
	p := filepath.Join("/proc/sys", key)
	if cur, err := os.ReadFile(p); err == nil && string(cur) == value+"\n" {
		return nil
	}
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// withNft runs f on an nftables connection in the calling thread's namespace and flushes
// what it queued as one transaction.
func withNft(f func(*nftables.Conn) error) error {
	host, err := currentNS()
	if err != nil {
		return err
	}
	defer host.Close()
	return withNftAt(host, f)
}

// withNftAt runs f on an nftables connection in namespace ns and flushes what it queued as
// one transaction.
func withNftAt(ns netns.NsHandle, f func(*nftables.Conn) error) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer c.CloseLasting()
	if err := f(c); err != nil {
		return err
	}
	return c.Flush()
}
