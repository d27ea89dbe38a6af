package ctrd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// find returns this runtime's container for workspace name, or an error wrapping ErrNotFound.
func (r *Runtime) find(ctx context.Context, c *containerd.Client, name string) (containerd.Container, error) {
	filter := fmt.Sprintf("labels.%q==%q,labels.%q==%q", LabelMachine, r.Machine, LabelWorkspace, name)
	ctrs, err := c.Containers(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	if ctrs, err = r.mine(ctx, ctrs); err != nil {
		return nil, err
	}
	if len(ctrs) == 0 {
		return nil, ErrNotFound
	}
	return ctrs[0], nil
}

// Stop stops workspace name's task — SIGTERM, then SIGKILL after StopGrace — and deletes it.
// The container and its snapshot (rootfs changes), the home and workspace dirs stay. Stopping a
// stopped workspace is fine; an unknown one is an error wrapping ErrNotFound.
func (r *Runtime) Stop(ctx context.Context, name string) error {
	defer r.lock(name)()
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return err
	}
	ctr, err := r.find(ctx, c, name)
	if err != nil {
		return fmt.Errorf("ws stop %s: %w", name, err)
	}
	if err := r.stopTask(ctx, ctr); err != nil {
		return fmt.Errorf("ws stop %s: %w", name, err)
	}
	return nil
}

func (r *Runtime) stopTask(ctx context.Context, ctr containerd.Container) error {
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("load task: %w", err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		return fmt.Errorf("wait task: %w", err)
	}
	if err := r.signal(ctx, task, exited); err != nil {
		return err
	}
	if _, err := task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete task: %w", err)
	}
	return nil
}

// signal sends SIGTERM, waits up to the grace period, then SIGKILL, and waits for the exit.
func (r *Runtime) signal(ctx context.Context, task containerd.Task, exited <-chan containerd.ExitStatus) error {
	if st, err := task.Status(ctx); err == nil && st.Status == containerd.Stopped {
		return nil
	}
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	grace := time.NewTimer(r.stopGrace())
	defer grace.Stop()
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-grace.C:
	}
	if err := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("SIGKILL: %w", err)
	}
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Delete removes workspace name: its task, container, snapshot, network namespace, veth and
// routes, its workspace dir, run dir and log. The owner's home stays. Deleting what is gone is
// no error.
func (r *Runtime) Delete(ctx context.Context, name string) error {
	defer r.lock(name)()
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return err
	}
	if err := r.delete(ctx, c, name); err != nil {
		return fmt.Errorf("ws delete %s: %w", name, err)
	}
	return nil
}

func (r *Runtime) delete(ctx context.Context, c *containerd.Client, name string) error {
	nc, haveNet := r.savedNetConfig(name)
	ctr, err := r.find(ctx, c, name)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return err
	default:
		if labels, err := ctr.Labels(ctx); err == nil {
			if lnc, err := netConfigFromLabels(labels); err == nil {
				nc, haveNet = lnc, true
			}
		}
		if task, err := ctr.Task(ctx, nil); err == nil {
			if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("delete task: %w", err)
			}
		}
		if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete container: %w", err)
		}
	}
	if !haveNet {
		nc.Netns = ""
	}
	return errors.Join(
		r.removeHostState(name, nc),
		os.RemoveAll(r.wsDir(name)),
		removeIfExists(r.LogPath(name)),
	)
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// List returns this runtime's workspaces as containerd sees them, for adoption after a restart:
// never those of another runtime with the same machine name (see LabelOwner).
func (r *Runtime) List(ctx context.Context) ([]Status, error) {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return nil, err
	}
	ctrs, err := c.Containers(ctx, fmt.Sprintf("labels.%q==%q", LabelMachine, r.Machine))
	if err == nil {
		ctrs, err = r.mine(ctx, ctrs)
	}
	if err != nil {
		return nil, fmt.Errorf("ws list: %w", err)
	}
	out := make([]Status, 0, len(ctrs))
	for _, ctr := range ctrs {
		st, err := r.status(ctx, ctr)
		if errors.Is(err, errIsService) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("ws list: %w", err)
		}
		out = append(out, st)
	}
	return out, nil
}

// errIsService is status's answer for a service's container: List skips it.
var errIsService = errors.New("the container is an environment service's, not a workspace")

// status reads a container's workspace name and its task's state.
func (r *Runtime) status(ctx context.Context, ctr containerd.Container) (Status, error) {
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return Status{}, err
	}
	if _, ok := labels[LabelService]; ok {
		return Status{}, errIsService
	}
	st := Status{Name: labels[LabelWorkspace], State: StateStopped}
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return st, nil
	} else if err != nil {
		return st, err
	}
	ts, err := task.Status(ctx)
	if errdefs.IsNotFound(err) { // deleted since Task: stopped
		return st, nil
	} else if err != nil {
		return st, err
	}
	switch ts.Status {
	case containerd.Running, containerd.Paused, containerd.Pausing:
		st.State, st.PID = StateRunning, int(task.Pid())
	case containerd.Created:
		st.State = StateStarting
	default:
		st.State, st.Reason = StateFailed, fmt.Sprintf("exited with code %d", ts.ExitStatus)
	}
	return st, nil
}

// Status returns workspace name's status; an unknown name is an error wrapping ErrNotFound.
func (r *Runtime) Status(ctx context.Context, name string) (Status, error) {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return Status{}, err
	}
	ctr, err := r.find(ctx, c, name)
	if err != nil {
		return Status{Name: name}, fmt.Errorf("ws status %s: %w", name, err)
	}
	return r.status(ctx, ctr)
}
