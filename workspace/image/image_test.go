package image_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"meshwork.dev/workspace/image"
)

const sock = "/var/lib/meshwork/containerd/containerd.sock"

func build(t *testing.T, ref string) []byte {
	t.Helper()
	files, err := image.Busybox()
	if err != nil {
		t.Skipf("image: %v", err)
	}
	files = append(files,
		image.File{Path: "/opt/hello.txt", Data: []byte("hello\n")},
		image.File{Path: "/opt/run.sh", Mode: 0o755, Data: []byte("#!/bin/sh\necho hi\n")},
		image.File{Path: "/opt/link", Link: "hello.txt"},
	)
	var buf bytes.Buffer
	if err := image.Build(&buf, ref, files, image.Config{Cmd: []string{"/opt/run.sh"}, Env: []string{"A=b"}}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDeterministic(t *testing.T) {
	a, b := build(t, "meshwork.dev/det:1"), build(t, "meshwork.dev/det:1")
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of the same image differ")
	}
	if c := build(t, "meshwork.dev/det:2"); bytes.Equal(a, c) {
		t.Fatal("the ref does not reach the tarball")
	}
}

func TestBuildRejectsDuplicates(t *testing.T) {
	files := []image.File{{Path: "/a", Data: []byte("1")}, {Path: "a", Data: []byte("2")}}
	if err := image.Build(new(bytes.Buffer), "x/y:1", files, image.Config{}); err == nil {
		t.Fatal("duplicate path accepted")
	}
	if err := image.Build(new(bytes.Buffer), "", nil, image.Config{}); err == nil {
		t.Fatal("empty ref accepted")
	}
}

// TestImportsIntoContainerd: containerd imports the tarball under its ref and the unpacked
// rootfs holds the files.
func TestImportsIntoContainerd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("image: needs root to mount the unpacked rootfs")
	}
	if _, err := os.Stat(sock); err != nil {
		t.Skipf("image: no containerd at %s (start it with scripts/deps.sh)", sock)
	}
	c, err := containerd.New(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(t.Context(), "meshwork-test"), 60*time.Second)
	defer cancel()
	ref := "meshwork.dev/image-test:1"
	imgs, err := c.Import(ctx, bytes.NewReader(build(t, ref)))
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Name != ref {
		t.Fatalf("imported %+v, want one image %s", imgs, ref)
	}
	img := containerd.NewImage(c, imgs[0])
	if err := img.Unpack(ctx, "overlayfs"); err != nil {
		t.Fatal(err)
	}
	root := mountView(t, ctx, c, img)
	checkFile(t, root, "opt/hello.txt", "hello\n", 0o644)
	checkFile(t, root, "opt/run.sh", "#!/bin/sh\necho hi\n", 0o755)
	if target, err := os.Readlink(filepath.Join(root, "opt/link")); err != nil || target != "hello.txt" {
		t.Errorf("opt/link -> %q, %v", target, err)
	}
	if target, err := os.Readlink(filepath.Join(root, "bin/sh")); err != nil || target != "busybox" {
		t.Errorf("bin/sh -> %q, %v", target, err)
	}
	if st, err := os.Stat(filepath.Join(root, "tmp")); err != nil || st.Mode()&os.ModeSticky == 0 {
		t.Errorf("tmp: %v, %v", st, err)
	}
}

// mountView mounts a read-only view of img's rootfs and returns where.
func mountView(t *testing.T, ctx context.Context, c *containerd.Client, img containerd.Image) string {
	t.Helper()
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key := "image-test-view-" + filepath.Base(t.TempDir())
	sn := c.SnapshotService("overlayfs")
	mounts, err := sn.View(ctx, key, chainID(diffIDs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Remove(context.WithoutCancel(ctx), key) })
	dir := t.TempDir()
	if err := mount.All(mounts, dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mount.UnmountAll(dir, 0) })
	return dir
}

func checkFile(t *testing.T, root, p, want string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, p))
	if err != nil || string(b) != want {
		t.Errorf("%s = %q, %v; want %q", p, b, err, want)
	}
	if st, err := os.Stat(filepath.Join(root, p)); err == nil && st.Mode().Perm() != mode {
		t.Errorf("%s mode %v, want %v", p, st.Mode().Perm(), mode)
	}
}

// TestDockerArchive: the tarball is also a docker-archive, as `docker load` reads one: its
// manifest.json names the ref, a config blob whose rootfs lists the diff ID of the layer blob
// it names (the gzipped layer's uncompressed digest, which docker checks), all in the tarball.
func TestDockerArchive(t *testing.T) {
	ref := "meshwork.dev/docker-archive:1"
	entries := untar(t, build(t, ref))
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(entries["manifest.json"], &manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(manifest) != 1 || len(manifest[0].Layers) != 1 || !slices.Equal(manifest[0].RepoTags, []string{ref}) {
		t.Fatalf("manifest.json = %+v, want one image tagged %s with one layer", manifest, ref)
	}
	m := manifest[0]
	var cfg ocispec.Image
	if err := json.Unmarshal(blob(t, entries, m.Config), &cfg); err != nil {
		t.Fatalf("config %s: %v", m.Config, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(t, entries, m.Layers[0])))
	if err != nil {
		t.Fatalf("layer %s: %v", m.Layers[0], err)
	}
	diffID, err := digest.FromReader(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.RootFS.DiffIDs, []digest.Digest{diffID}) {
		t.Errorf("config's diff IDs %v, the layer's %v", cfg.RootFS.DiffIDs, diffID)
	}
	if _, ok := entries["index.json"]; !ok {
		t.Error("no index.json: the OCI layout is gone")
	}
}

// blob is the entry at path, checked against the digest its name spells.
func blob(t *testing.T, entries map[string][]byte, path string) []byte {
	t.Helper()
	data, ok := entries[path]
	if !ok {
		t.Fatalf("manifest.json names %s, not in the tarball", path)
	}
	if d := "blobs/sha256/" + digest.FromBytes(data).Encoded(); d != path {
		t.Fatalf("%s holds %s", path, d)
	}
	return data
}

// untar is the regular files of a tarball by name.
func untar(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	entries := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		if err != nil {
			t.Fatal(err)
		}
		if entries[h.Name], err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
	}
}
