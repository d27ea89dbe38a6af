package ctrd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"

	"meshwork.dev/workspace/wsnet"
)

// ContainerID is the containerd container (and snapshot) ID for coord's workspace id.
func ContainerID(id string) string { return "mw-" + id }

// NetConfig is the network namespace and veth of workspace s.
func NetConfig(s Spec) wsnet.Config {
	sum := sha256.Sum256([]byte(s.ID))
	short := hex.EncodeToString(sum[:6])
	return wsnet.Config{Netns: "mw-" + short, HostIf: "mwv" + short, IPv4: s.IPv4, IPv6: s.IPv6}
}

// Run makes workspace s exist and run: it pulls the image if absent, sets up the network,
// creates the container and starts its task. A running task is adopted as it is (never
// restarted); a stopped one is started again with its disk as it was. progress, if not nil,
// hears each step, pull progress included.
func (r *Runtime) Run(ctx context.Context, s Spec, progress func(Status)) (Status, error) {
	if err := s.Validate(); err != nil {
		return Status{}, fmt.Errorf("ws run: %w", err)
	}
	if err := r.checkIdentity(); err != nil {
		return Status{}, err
	}
	if progress == nil {
		progress = func(Status) {}
	}
	defer r.lock(s.Name)()
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return Status{}, err
	}
	st, err := r.run(ctx, c, s, progress)
	if err != nil {
		return Status{Name: s.Name, State: StateFailed, Reason: err.Error()}, fmt.Errorf("ws run %s: %w", s.Name, err)
	}
	return st, nil
}

func (r *Runtime) run(ctx context.Context, c *containerd.Client, s Spec, progress func(Status)) (Status, error) {
	ctr, err := c.LoadContainer(ctx, ContainerID(s.ID))
	if errdefs.IsNotFound(err) {
		progress(Status{Name: s.Name, State: StatePending})
		if ctr, err = r.create(ctx, c, s, progress); err != nil {
			return Status{}, err
		}
	} else if err != nil {
		return Status{}, fmt.Errorf("load container: %w", err)
	} else if err := r.ours(ctx, ctr); err != nil {
		return Status{}, err
	} else if err := r.prepareHost(s); err != nil { // after a reboot the namespace is gone
		return Status{}, err
	}
	if st, ok := r.adopt(ctx, ctr, s.Name); ok {
		return st, nil
	}
	if err := r.ensureUsers(ctx, c, ctr, s); err != nil {
		return Status{}, err
	}
	progress(Status{Name: s.Name, State: StateStarting})
	return r.start(ctx, ctr, s.Name)
}

// ours fails unless ctr belongs to this runtime.
func (r *Runtime) ours(ctx context.Context, ctr containerd.Container) error {
	ok, err := r.owns(ctx, ctr)
	if err != nil || ok {
		return err
	}
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return fmt.Errorf("container labels: %w", err)
	}
	return fmt.Errorf("container %s belongs to machine %q (owner %q), not to this one (%q, owner %q): its id is not unique",
		ctr.ID(), labels[LabelMachine], labels[LabelOwner], r.Machine, r.Identity)
}

// adopt returns the status of ctr's running task, if it has one.
func (r *Runtime) adopt(ctx context.Context, ctr containerd.Container, name string) (Status, bool) {
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		return Status{}, false
	}
	ts, err := task.Status(ctx)
	if err == nil && ts.Status == containerd.Paused {
		err = task.Resume(ctx)
		ts.Status = containerd.Running
	}
	if err == nil && ts.Status == containerd.Running {
		r.logf("ws %s: adopted running task, pid %d", name, task.Pid())
		return Status{Name: name, State: StateRunning, PID: int(task.Pid())}, true
	}
	if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		r.logf("ws %s: delete old task: %v", name, err)
	}
	return Status{}, false
}

// start starts a new task for workspace ctr, its output appended to the log file.
func (r *Runtime) start(ctx context.Context, ctr containerd.Container, name string) (Status, error) {
	return r.startTask(ctx, ctr, name, r.LogPath(name))
}

// startTask starts a new task for ctr, its output appended to logPath.
func (r *Runtime) startTask(ctx context.Context, ctr containerd.Container, name, logPath string) (Status, error) {
	t0 := time.Now()
	task, err := ctr.NewTask(ctx, cio.LogFile(logPath))
	if err != nil {
		return Status{}, fmt.Errorf("create task: %w", err)
	}
	if err := task.Start(ctx); err != nil {
		if _, derr := task.Delete(ctx, containerd.WithProcessKill); derr != nil {
			r.logf("ws %s: delete failed task: %v", name, derr)
		}
		return Status{}, fmt.Errorf("start task: %w (see %s)", err, logPath)
	}
	r.logf("%s: task started, pid %d, in %v", name, task.Pid(), time.Since(t0).Round(time.Millisecond))
	return Status{Name: name, State: StateRunning, PID: int(task.Pid())}, nil
}

// create makes the container of s and everything it needs on the machine. On failure it
// removes what it made.
func (r *Runtime) create(ctx context.Context, c *containerd.Client, s Spec, progress func(Status)) (_ containerd.Container, err error) {
	img, err := r.ensureImage(ctx, c, s, progress)
	if err != nil {
		return nil, err
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	undo = append(undo, func() { r.removeHostState(s.Name, NetConfig(s)) })
	if err := r.prepareHost(s); err != nil {
		return nil, err
	}
	t0 := time.Now()
	ctr, err := c.NewContainer(ctx, ContainerID(s.ID),
		containerd.WithContainerLabels(r.labels(s)),
		containerd.WithImage(img),
		containerd.WithSnapshotter(r.snapshotter()),
		containerd.WithNewSnapshot(ContainerID(s.ID), img),
		containerd.WithNewSpec(r.specOpts(s, img)...),
	)
	if err != nil {
		r.deleteSnapshot(ctx, c, ContainerID(s.ID))
		return nil, fmt.Errorf("create container: %w", err)
	}
	r.logf("ws %s: container created in %v", s.Name, time.Since(t0).Round(time.Millisecond))
	undo = append(undo, func() {
		if derr := ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup); derr != nil {
			r.logf("ws %s: undo create: %v", s.Name, derr)
		}
	})
	return ctr, nil
}

func (r *Runtime) deleteSnapshot(ctx context.Context, c *containerd.Client, key string) {
	err := c.SnapshotService(r.snapshotter()).Remove(context.WithoutCancel(ctx), key)
	if err != nil && !errdefs.IsNotFound(err) {
		r.logf("ctrd: remove snapshot %s: %v", key, err)
	}
}

func (r *Runtime) labels(s Spec) map[string]string {
	nc := NetConfig(s)
	l := map[string]string{
		LabelMachine:   r.Machine,
		LabelOwner:     r.Identity,
		LabelWorkspace: s.Name,
		LabelUser:      s.User,
		LabelID:        s.ID,
		LabelIPv4:      s.IPv4.String(),
		LabelNetns:     nc.Netns,
		LabelHostIf:    nc.HostIf,
	}
	if s.IPv6.IsValid() {
		l[LabelIPv6] = s.IPv6.String()
	}
	return l
}

// netConfigFromLabels rebuilds a workspace's network config from its container's labels.
func netConfigFromLabels(l map[string]string) (wsnet.Config, error) {
	c := wsnet.Config{Netns: l[LabelNetns], HostIf: l[LabelHostIf]}
	var err error
	if c.IPv4, err = netip.ParseAddr(l[LabelIPv4]); err != nil {
		return c, fmt.Errorf("label %s: %w", LabelIPv4, err)
	}
	if v := l[LabelIPv6]; v != "" {
		if c.IPv6, err = netip.ParseAddr(v); err != nil {
			return c, fmt.Errorf("label %s: %w", LabelIPv6, err)
		}
	}
	return c, c.Validate()
}
