package ctrd

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
)

// ensureImage returns s's image, unpacked, pulling it if it is not present.
func (r *Runtime) ensureImage(ctx context.Context, c *containerd.Client, s Spec, progress func(Status)) (containerd.Image, error) {
	names := []string{s.Image}
	named, perr := reference.ParseDockerRef(s.Image)
	if perr == nil && named.String() != s.Image {
		names = append(names, named.String())
	}
	for _, n := range names {
		img, err := c.GetImage(ctx, n)
		if err == nil {
			return img, r.unpack(ctx, img)
		}
		if !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("image %q: %w", s.Image, err)
		}
	}
	if perr != nil {
		return nil, fmt.Errorf("image %q: not found locally and not a valid reference (%v); import it or check the name", s.Image, perr)
	}
	img, err := r.pull(ctx, c, named.String(), s.Name, progress)
	if err != nil {
		return nil, fmt.Errorf("image %q: not found locally and pull failed: %w; import it or check the name", s.Image, err)
	}
	return img, nil
}

func (r *Runtime) unpack(ctx context.Context, img containerd.Image) error {
	ok, err := img.IsUnpacked(ctx, r.snapshotter())
	if err == nil && !ok {
		err = img.Unpack(ctx, r.snapshotter())
	}
	if err != nil {
		return fmt.Errorf("image %q: unpack for %s: %w", img.Name(), r.snapshotter(), err)
	}
	return nil
}

// pull fetches and unpacks ref, reporting bytes done every half second.
func (r *Runtime) pull(ctx context.Context, c *containerd.Client, ref, name string, progress func(Status)) (containerd.Image, error) {
	progress(Status{Name: name, State: StatePulling, Reason: "resolving " + ref})
	r.logf("ws %s: pulling %s", name, ref)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.reportPull(ctx, c, name, done, progress)
	}()
	img, err := c.Pull(ctx, ref, containerd.WithPullUnpack, containerd.WithPullSnapshotter(r.snapshotter()))
	close(done)
	wg.Wait()
	return img, err
}

// reportPull sums the content store's active downloads until done is closed.
func (r *Runtime) reportPull(ctx context.Context, c *containerd.Client, name string, done <-chan struct{}, progress func(Status)) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		statuses, err := c.ContentStore().ListStatuses(ctx)
		if err != nil || len(statuses) == 0 {
			continue
		}
		var off, total int64
		for _, st := range statuses {
			off, total = off+st.Offset, total+st.Total
		}
		progress(Status{Name: name, State: StatePulling, Reason: mb(off) + " / " + mb(total)})
	}
}

func mb(n int64) string {
	if n < 10<<20 {
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.0f MB", float64(n)/1e6)
}

// Import loads an OCI image-layout (or docker save) tarball into containerd and unpacks its
// images for the snapshotter. It returns the names of the images it holds.
func (r *Runtime) Import(ctx context.Context, tar io.Reader) ([]string, error) {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return nil, err
	}
	imgs, err := c.Import(ctx, tar)
	if err != nil {
		return nil, fmt.Errorf("image import: %w", err)
	}
	var names []string
	for _, im := range imgs {
		if err := r.unpack(ctx, containerd.NewImage(c, im)); err != nil {
			return names, fmt.Errorf("image import: %w", err)
		}
		names = append(names, im.Name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("image import: the tarball names no image (index.json needs an %s annotation)", "org.opencontainers.image.ref.name")
	}
	return names, nil
}
