package ctrd

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
)

// ExecOutputMax is how much of an ExecService's output is kept.
const ExecOutputMax = 4 << 10

// ExecService runs argv inside service id's running task as its user, with its environment
// and working dir (a healthcheck). output is stdout and stderr together, cut to ExecOutputMax.
// Past timeout the process is killed and err wraps context.DeadlineExceeded.
func (r *Runtime) ExecService(ctx context.Context, id string, argv []string, timeout time.Duration) (code int, output []byte, err error) {
	code, output, err = r.execService(ctx, id, argv, timeout)
	if err != nil {
		return code, output, fmt.Errorf("service exec %s: %w", id, err)
	}
	return code, output, nil
}

func (r *Runtime) execService(ctx context.Context, id string, argv []string, timeout time.Duration) (int, []byte, error) {
	if len(argv) == 0 {
		return -1, nil, errors.New("no command given")
	}
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return -1, nil, err
	}
	ctr, err := r.serviceContainer(ctx, c, id)
	if err != nil {
		return -1, nil, err
	}
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return -1, nil, errServiceNotRunning
	} else if err != nil {
		return -1, nil, fmt.Errorf("load task: %w", err)
	}
	sp, err := ctr.Spec(ctx)
	if err != nil {
		return -1, nil, fmt.Errorf("container spec: %w", err)
	}
	ps := *sp.Process
	ps.Terminal, ps.ConsoleSize, ps.Args = false, nil, slices.Clone(argv)
	out := &capped{max: ExecOutputMax}
	proc, err := task.Exec(ctx, "check-"+strings.ToLower(rand.Text()), &ps, cio.NewCreator(cio.WithStreams(nil, out, out)))
	if errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) {
		return -1, nil, errServiceNotRunning
	} else if err != nil {
		return -1, nil, fmt.Errorf("exec %q: %w", argv[0], err)
	}
	code, err := r.runExec(ctx, proc, argv[0], timeout)
	return code, out.bytes(), err
}

// runExec starts proc and waits up to timeout for it, killing it then; it is deleted either way.
func (r *Runtime) runExec(ctx context.Context, proc containerd.Process, name string, timeout time.Duration) (int, error) {
	bg := context.WithoutCancel(ctx)
	defer func() {
		dctx, cancel := context.WithTimeout(bg, 10*time.Second)
		defer cancel()
		if _, err := proc.Delete(dctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			r.logf("ctrd: delete exec %s: %v", proc.ID(), err)
		}
	}()
	exited, err := proc.Wait(bg)
	if err != nil {
		return -1, fmt.Errorf("wait: %w", err)
	}
	if err := proc.Start(ctx); err != nil {
		return -1, fmt.Errorf("start %w", err)
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case st := <-exited:
		ioDone(proc, outputQuiet)
		code, _, err := st.Result()
		return int(code), err
	case <-tctx.Done():
		if err := proc.Kill(bg, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
			r.logf("ctrd: kill exec %s: %v", proc.ID(), err)
		}
		return -1, fmt.Errorf("%q still ran after %v and was killed: %w", name, timeout, tctx.Err())
	}
}

// ioDone waits up to d for proc's output to be copied: a background child may hold it open.
func ioDone(proc containerd.Process, d time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		proc.IO().Wait()
	}()
	select {
	case <-done:
	case <-time.After(d):
		proc.IO().Cancel()
		select { // Delete closes the IO for good
		case <-done:
		case <-time.After(time.Second):
		}
	}
}

// capped keeps the first max bytes written to it; it is safe for two streams.
type capped struct {
	mu  sync.Mutex // guards buf
	max int
	buf []byte
}

func (c *capped) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - len(c.buf); room > 0 {
		c.buf = append(c.buf, b[:min(room, len(b))]...)
	}
	return len(b), nil
}

func (c *capped) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.buf)
}
