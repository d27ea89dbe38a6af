package image_test

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"

	"meshwork.dev/workspace/image"
)

// packed is a dynamic program whose libraries pull in more libraries (ls → libselinux →
// libpcre2), so packing must follow the loader transitively.
const packed = "/usr/bin/ls"

func byPath(files []image.File) map[string]image.File {
	m := map[string]image.File{}
	for _, f := range files {
		m[f.Path] = f
	}
	return m
}

// interp reads the loader path the program names, the way the kernel finds it.
func interp(t *testing.T, p string) string {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Skipf("image: %s: %v", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b := make([]byte, prog.Filesz)
			prog.ReadAt(b, 0)
			return strings.TrimRight(string(b), "\x00")
		}
	}
	t.Skipf("image: %s is static on this machine", p)
	return ""
}

// TestHostBinariesPacksLibraries: the program, its loader at PT_INTERP, libc and the
// libraries of its libraries are regular files with the host's bytes.
func TestHostBinariesPacksLibraries(t *testing.T) {
	loader := interp(t, packed)
	files, err := image.HostBinaries(packed)
	if err != nil {
		t.Fatal(err)
	}
	got := byPath(files)
	for _, p := range []string{packed, loader, "/etc/nsswitch.conf"} {
		if _, ok := got[p]; !ok {
			t.Errorf("no %s in %d files", p, len(files))
		}
	}
	if got[packed].Mode&0o111 == 0 || got[loader].Mode&0o111 == 0 {
		t.Errorf("program mode %v, loader mode %v: want executable", got[packed].Mode, got[loader].Mode)
	}
	var libs []string
	for p, f := range got {
		if f.Link != "" {
			t.Errorf("%s is a symlink to %s; want the file itself", p, f.Link)
		}
		if strings.Contains(p, ".so") && p != loader {
			libs = append(libs, p)
			host, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(host, f.Data) {
				t.Errorf("%s: packed %d bytes, host %d (%v)", p, len(f.Data), len(host), err)
			}
		}
	}
	for _, want := range []string{"/libc.so.6", "/libselinux.so.1", "/libpcre2-8.so.0"} {
		if !hasSuffix(libs, want) {
			t.Errorf("no library ending %s among %v", want, libs)
		}
	}
}

func hasSuffix(list []string, suffix string) bool {
	for _, s := range list {
		if strings.HasSuffix(s, suffix) {
			return true
		}
	}
	return false
}

func TestHostBinariesStaticAndErrors(t *testing.T) {
	if _, err := os.Stat(image.BusyboxPath); err != nil {
		t.Skipf("image: %v (install busybox-static: scripts/deps.sh)", err)
	}
	files, err := image.HostBinaries(image.BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || byPath(files)[image.BusyboxPath].Data == nil {
		t.Errorf("static busybox packed as %d files, want itself and nsswitch.conf", len(files))
	}
	for _, bad := range []string{"/nonexistent/prog", "usr/bin/ls", "/etc/hostname"} {
		if _, err := image.HostBinaries(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("HostBinaries(%q) = %v, want an error naming it", bad, err)
		}
	}
}

func TestMergeLaterWins(t *testing.T) {
	busybox, err := image.Busybox()
	if err != nil {
		t.Skipf("image: %v", err)
	}
	files := image.Merge(busybox, image.Accounts(image.User{Name: "redis", UID: 999, GID: 999, Home: "/data"}))
	if len(files) != len(busybox) {
		t.Errorf("merged %d files, want %d (passwd and group replaced, not added)", len(files), len(busybox))
	}
	if p := string(byPath(files)["/etc/passwd"].Data); !strings.Contains(p, "root:x:0:0:") || !strings.Contains(p, "redis:x:999:999:redis:/data:/bin/false\n") {
		t.Errorf("passwd:\n%s", p)
	}
	if err := image.Build(new(bytes.Buffer), "x/y:1", files, image.Config{}); err != nil {
		t.Errorf("Build of merged files: %v", err)
	}
}

// TestPackedRunsInContainer: an image of nothing but the packed program runs it in containerd.
func TestPackedRunsInContainer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("image: needs root to run a container")
	}
	if _, err := os.Stat(sock); err != nil {
		t.Skipf("image: no containerd at %s (start it with scripts/deps.sh)", sock)
	}
	files, err := image.HostBinaries(packed)
	if err != nil {
		t.Fatal(err)
	}
	ref := "meshwork.dev/imgd-packed:1"
	var tar bytes.Buffer
	if err := image.Build(&tar, ref, files, image.Config{Cmd: []string{packed, "-d", packed}}); err != nil {
		t.Fatal(err)
	}
	c, err := containerd.New(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(t.Context(), "imgd-image-test"), 60*time.Second)
	defer cancel()
	imgs, err := c.Import(ctx, &tar)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.ImageService().Delete(context.WithoutCancel(ctx), ref) })
	img := containerd.NewImage(c, imgs[0])
	if err := img.Unpack(ctx, "overlayfs"); err != nil {
		t.Fatal(err)
	}
	out, code := runOnce(t, ctx, c, img)
	if code != 0 || out != packed+"\n" {
		t.Errorf("packed %s in a container: exit %d, output %q; want 0 and %q", packed, code, out, packed+"\n")
	}
}

// runOnce runs img's command in a new container and returns its output and exit code.
func runOnce(t *testing.T, ctx context.Context, c *containerd.Client, img containerd.Image) (string, uint32) {
	t.Helper()
	id := "imgd-packed-" + strings.ReplaceAll(t.Name(), "/", "-")
	ctr, err := c.NewContainer(ctx, id, containerd.WithNewSnapshot(id, img), containerd.WithNewSpec(oci.WithImageConfig(img)))
	if err != nil {
		t.Fatal(err)
	}
	defer ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
	var out, stderr bytes.Buffer
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &out, &stderr)))
	if err != nil {
		t.Fatal(err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
		t.Fatal(err)
	}
	var st containerd.ExitStatus
	select {
	case st = <-exited:
	case <-ctx.Done():
	}
	// Delete waits until the output is copied: out may be read after it.
	if _, err := task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatalf("container did not exit in time; output %q", out.String())
	}
	if stderr.Len() > 0 {
		t.Logf("stderr: %s", stderr.Bytes())
	}
	return out.String(), st.ExitCode()
}
