package ctrd

import (
	"context"
	"errors"
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
		return nil, fmt.Errorf("image %q is not on this machine and could not be pulled: %w; import it or check the name", s.Image, err)
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

// ErrPullStalled is the cause of a pull that made no progress for PullTimeout: a registry
// that does not resolve, does not answer, or stopped sending.
var ErrPullStalled = errors.New("the registry sent nothing")

// pull fetches and unpacks ref, reporting bytes done every half second. A pull that makes no
// progress for PullTimeout is given up.
func (r *Runtime) pull(ctx context.Context, c *containerd.Client, ref, name string, progress func(Status)) (containerd.Image, error) {
	progress(Status{Name: name, State: StatePulling, Reason: "resolving " + ref})
	r.logf("ws %s: pulling %s", name, ref)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.watchPull(ctx, c, name, done, progress, cancel)
	}()
	img, err := c.Pull(ctx, ref, containerd.WithPullUnpack, containerd.WithPullSnapshotter(r.snapshotter()))
	close(done)
	wg.Wait()
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, ErrPullStalled) {
		err = cause
	}
	return img, err
}

func (r *Runtime) pullTimeout() time.Duration {
	if r.PullTimeout > 0 {
		return r.PullTimeout
	}
	return DefaultPullTimeout
}

// watchPull sums the content store's active downloads until done is closed, and gives the
// pull up (cancel) once they have not grown for PullTimeout.
func (r *Runtime) watchPull(ctx context.Context, c *containerd.Client, name string, done <-chan struct{}, progress func(Status), cancel context.CancelCauseFunc) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var last int64
	moved := time.Now()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		off, total := pullBytes(ctx, c)
		if off > last {
			last, moved = off, time.Now()
			progress(Status{Name: name, State: StatePulling, Reason: mb(off) + " / " + mb(total)})
		}
		if d := r.pullTimeout(); time.Since(moved) >= d {
			cancel(fmt.Errorf("%w for %v (is its host right, and reachable from this machine?)", ErrPullStalled, d))
			return
		}
	}
}

// pullBytes sums the bytes done and expected of the content store's active downloads.
func pullBytes(ctx context.Context, c *containerd.Client) (off, total int64) {
	statuses, err := c.ContentStore().ListStatuses(ctx)
	if err != nil {
		return 0, 0
	}
	for _, st := range statuses {
		off, total = off+st.Offset, total+st.Total
	}
	return off, total
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
