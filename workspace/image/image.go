// Package image builds image tarballs locally and offline, for tests and demos that have no
// registry: one gzipped layer from a list of files, with a runnable busybox to start from. A
// tarball is both an OCI image layout (containerd's import) and a docker-archive (`docker load`
// of Docker 20.10, which reads only manifest.json), sharing one set of blobs.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	_ "crypto/sha256" // registers sha256 for go-digest
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// AnnotationImageName is containerd's annotation naming an image in an index
// (images.AnnotationImageName), repeated here so this package needs no containerd.
const AnnotationImageName = "io.containerd.image.name"

// A File is one entry of an image's layer.
type File struct {
	Path string      // absolute path inside the image ("/bin/sh")
	Mode fs.FileMode // permission bits, plus fs.ModeDir for a directory; 0 means 0644 (0755 for a directory)
	Data []byte      // contents of a regular file
	Link string      // symlink target; when set, the entry is a symlink and Data is ignored
}

// Config is the part of the OCI image config a workspace image sets.
type Config struct {
	Cmd, Entrypoint, Env []string
	WorkingDir           string
}

// epoch is every entry's modification time, so that the same input gives the same bytes.
var epoch = time.Unix(0, 0).UTC()

// Build writes an image tarball named ref holding files as one gzipped layer: an OCI image
// layout with, beside it, the manifest.json of a docker-archive naming the same config and
// layer blobs, so that containerd's import and `docker load` both take it. The output depends
// only on its arguments (and the machine's architecture): building twice gives the same bytes,
// so the same digests.
func Build(w io.Writer, ref string, files []File, cfg Config) error {
	if ref == "" {
		return fmt.Errorf("image build: empty ref; name the image (e.g. meshwork.dev/dev:1)")
	}
	layer, diffID, err := buildLayer(files)
	if err != nil {
		return fmt.Errorf("image build %q: %w", ref, err)
	}
	blobs := newBlobs()
	layerDesc := blobs.add(ocispec.MediaTypeImageLayerGzip, layer)
	configDesc, err := blobs.addJSON(ocispec.MediaTypeImageConfig, imageConfig(cfg, diffID))
	if err != nil {
		return fmt.Errorf("image build %q: %w", ref, err)
	}
	manifestDesc, err := blobs.addJSON(ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specsVersioned(),
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    []ocispec.Descriptor{layerDesc},
	})
	if err != nil {
		return fmt.Errorf("image build %q: %w", ref, err)
	}
	manifestDesc.Annotations = map[string]string{
		ocispec.AnnotationRefName: ref,
		AnnotationImageName:       ref,
	}
	docker, err := dockerManifest(ref, configDesc, layerDesc)
	if err != nil {
		return fmt.Errorf("image build %q: %w", ref, err)
	}
	if err := writeLayout(w, blobs, manifestDesc, docker); err != nil {
		return fmt.Errorf("image build %q: %w", ref, err)
	}
	return nil
}

// dockerManifest is a docker-archive's manifest.json: one image, tagged ref, whose config and
// layer are the OCI layout's blobs (Docker decompresses a gzipped layer and checks its diff ID).
func dockerManifest(ref string, config, layer ocispec.Descriptor) ([]byte, error) {
	type entry struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	return json.Marshal([]entry{{Config: blobPath(config.Digest), RepoTags: []string{ref}, Layers: []string{blobPath(layer.Digest)}}})
}

func blobPath(d digest.Digest) string { return "blobs/" + d.Algorithm().String() + "/" + d.Encoded() }

func imageConfig(cfg Config, diffID digest.Digest) ocispec.Image {
	return ocispec.Image{
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config: ocispec.ImageConfig{
			Cmd:        cfg.Cmd,
			Entrypoint: cfg.Entrypoint,
			Env:        cfg.Env,
			WorkingDir: cfg.WorkingDir,
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	}
}

// buildLayer returns the gzipped tar of files (parent directories added, sorted by path) and
// the digest of the uncompressed tar (the layer's diff ID).
func buildLayer(files []File) (gz []byte, diffID digest.Digest, err error) {
	entries, err := normalize(files)
	if err != nil {
		return nil, "", err
	}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, f := range entries {
		if err := writeEntry(tw, f); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	var out bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&out, gzip.BestSpeed) // header left zero: no name, no time
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return out.Bytes(), digest.FromBytes(raw.Bytes()), nil
}

// normalize cleans paths, rejects duplicates and adds missing parent directories.
func normalize(files []File) ([]File, error) {
	byPath := map[string]File{}
	for _, f := range files {
		p := path.Clean("/" + f.Path)
		if p == "/" {
			continue
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("file %s listed twice", p)
		}
		f.Path = p
		byPath[p] = f
	}
	for p := range byPath {
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			if _, ok := byPath[dir]; !ok {
				byPath[dir] = File{Path: dir, Mode: fs.ModeDir | 0o755}
			}
		}
	}
	out := make([]File, 0, len(byPath))
	for _, f := range byPath {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func writeEntry(tw *tar.Writer, f File) error {
	h := &tar.Header{
		Name:    strings.TrimPrefix(f.Path, "/"),
		ModTime: epoch,
		Mode:    tarMode(f.Mode),
	}
	switch {
	case f.Link != "":
		h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Link, 0o777
	case f.Mode.IsDir():
		h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		if f.Mode.Perm() == 0 {
			h.Mode |= 0o755
		}
	default:
		h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		if f.Mode.Perm() == 0 {
			h.Mode |= 0o644
		}
	}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("tar %s: %w", f.Path, err)
	}
	if h.Typeflag == tar.TypeReg {
		if _, err := tw.Write(f.Data); err != nil {
			return fmt.Errorf("tar %s: %w", f.Path, err)
		}
	}
	return nil
}

// tarMode converts permission and special bits of an fs.FileMode to tar's (Unix) mode bits.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// blobs is a content-addressed set of blobs, written in digest order.
type blobs map[digest.Digest][]byte

func newBlobs() blobs { return blobs{} }

func (b blobs) add(mediaType string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	b[d] = data
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

func (b blobs) addJSON(mediaType string, v any) (ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return b.add(mediaType, data), nil
}

// writeLayout writes the OCI image layout (oci-layout, index.json), the docker-archive's
// manifest.json, then blobs/sha256/*.
func writeLayout(w io.Writer, b blobs, manifest ocispec.Descriptor, dockerManifest []byte) error {
	index, err := json.Marshal(ocispec.Index{
		Versioned: specsVersioned(),
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manifest},
	})
	if err != nil {
		return err
	}
	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	tw := tar.NewWriter(w)
	dirs := []string{"blobs/", "blobs/sha256/"}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	if err := addTarFile(tw, ocispec.ImageLayoutFile, layout); err != nil {
		return err
	}
	if err := addTarFile(tw, "index.json", index); err != nil {
		return err
	}
	if err := addTarFile(tw, "manifest.json", dockerManifest); err != nil {
		return err
	}
	digests := make([]digest.Digest, 0, len(b))
	for d := range b {
		digests = append(digests, d)
	}
	sort.Slice(digests, func(i, j int) bool { return digests[i] < digests[j] })
	for _, d := range digests {
		if err := addTarFile(tw, blobPath(d), b[d]); err != nil {
			return err
		}
	}
	return tw.Close()
}

func addTarFile(tw *tar.Writer, name string, data []byte) error {
	h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: epoch}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func specsVersioned() specs.Versioned { return specs.Versioned{SchemaVersion: 2} }
