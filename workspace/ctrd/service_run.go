package ctrd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"

	"meshwork.dev/workspace/wsnet"
)

// Labels of service containers, besides LabelMachine, LabelOwner and the network labels that
// workspaces have too. A container with LabelService is a service, never a workspace.
const (
	LabelService     = "meshwork.service" // ServiceSpec.ID
	LabelEnv         = "meshwork.env"
	LabelEnvID       = "meshwork.envid"
	LabelServiceName = "meshwork.svcname"
	LabelHash        = "meshwork.hash"
)

// labelPrefix is reserved: a compose label under it is refused.
const labelPrefix = "meshwork."

// ServiceContainerID is the containerd container (and snapshot) ID of service id.
func ServiceContainerID(id string) string { return "mws-" + id }

// ServiceNetConfig is the network namespace and veth of service s.
func ServiceNetConfig(s ServiceSpec) wsnet.Config {
	sum := sha256.Sum256([]byte("service " + s.ID))
	short := hex.EncodeToString(sum[:6])
	return wsnet.Config{Netns: "mws-" + short, HostIf: wsnet.HostIfPrefix + short, IPv4: s.IPv4, IPv6: s.IPv6}
}

// Validate reports what is wrong with s, naming the field to fix.
func (s ServiceSpec) Validate() error {
	sv := s.Service
	switch {
	case !idRE.MatchString(s.ID) || len(s.ID) > 100:
		return fmt.Errorf("service id %q: letters and digits joined by . _ or -, at most 100", s.ID)
	case !idRE.MatchString(s.EnvID) || len(s.EnvID) > 60:
		return fmt.Errorf("service %s: environment id %q: letters and digits joined by . _ or -, at most 60", s.ID, s.EnvID)
	case !labelRE.MatchString(sv.Name):
		return fmt.Errorf("service %s: name %q: give a DNS label (a-z, 0-9, -)", s.ID, sv.Name)
	case sv.Image == "":
		return fmt.Errorf("service %s: no image given", s.ID)
	case !s.IPv4.Is4():
		return fmt.Errorf("service %s: IPv4 %v: the service needs a mesh IPv4", s.ID, s.IPv4)
	case s.IPv6.IsValid() && !s.IPv6.Is6():
		return fmt.Errorf("service %s: IPv6 %v is not an IPv6 address", s.ID, s.IPv6)
	case sv.Limits.CPUs < 0 || sv.Limits.MemoryBytes < 0:
		return fmt.Errorf("service %s: negative CPU or memory limit", s.ID)
	}
	for k := range sv.Labels {
		if strings.HasPrefix(k, labelPrefix) {
			return fmt.Errorf("service %s: label %q: the %s prefix is Meshwork's own; rename the label", sv.Name, k, labelPrefix)
		}
	}
	for _, v := range sv.Volumes {
		if v.Volume != "" && (filepath.Base(v.Volume) != v.Volume || v.Volume == "." || v.Volume == "..") {
			return fmt.Errorf("service %s: volume %q: give a plain name", sv.Name, v.Volume)
		}
		if !filepath.IsAbs(v.Target) {
			return fmt.Errorf("service %s: volume target %q: give an absolute path", sv.Name, v.Target)
		}
	}
	return nil
}

// RunService makes service s exist and run: its image (progress hears the pull), its network
// namespace, veth and guard (see SetServicePeers), its container (recreated when its hash
// differs from s.Hash) and a task unless one runs. A running task of the same hash is adopted,
// never restarted; one that exited is started again.
func (r *Runtime) RunService(ctx context.Context, s ServiceSpec, progress func(Status)) (ServiceStatus, error) {
	if err := s.Validate(); err != nil {
		return ServiceStatus{}, fmt.Errorf("service run: %w", err)
	}
	if s.Service.Init && r.Tools == "" {
		return ServiceStatus{}, fmt.Errorf("service run %s: init: true needs Runtime.Tools (the dir holding meshctl, the reaper run as pid 1)", s.Service.Name)
	}
	if err := r.checkIdentity(); err != nil {
		return ServiceStatus{}, err
	}
	if progress == nil {
		progress = func(Status) {}
	}
	defer r.lock("service " + s.ID)()
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return ServiceStatus{}, err
	}
	st, err := r.runService(ctx, c, s, progress)
	if err != nil {
		st := serviceStatusOf(s, StateFailed)
		return st, fmt.Errorf("service run %s: %w", s.ID, err)
	}
	return st, nil
}

func serviceStatusOf(s ServiceSpec, state State) ServiceStatus {
	return ServiceStatus{ID: s.ID, Env: s.Env, EnvID: s.EnvID, Name: s.Service.Name, Hash: s.Hash, State: state}
}

func (r *Runtime) runService(ctx context.Context, c *containerd.Client, s ServiceSpec, progress func(Status)) (ServiceStatus, error) {
	ctr, err := r.currentService(ctx, c, s)
	if err != nil {
		return ServiceStatus{}, err
	}
	if ctr == nil {
		progress(Status{Name: s.ID, State: StatePending})
		if ctr, err = r.createService(ctx, c, s, progress); err != nil {
			return ServiceStatus{}, err
		}
	} else if err := r.prepareService(s); err != nil { // after a reboot the namespace is gone
		return ServiceStatus{}, err
	}
	if pid, ok := r.adoptService(ctx, ctr, s.ID); ok {
		st := serviceStatusOf(s, StateRunning)
		st.PID = pid
		return st, nil
	}
	if err := r.writeServiceFiles(ctx, ctr, s); err != nil {
		return ServiceStatus{}, err
	}
	progress(Status{Name: s.ID, State: StateStarting})
	ws, err := r.startTask(ctx, ctr, s.ID, r.ServiceLogPath(s.ID))
	if err != nil {
		return ServiceStatus{}, err
	}
	st := serviceStatusOf(s, StateRunning)
	st.PID = ws.PID
	return st, nil
}

// currentService returns s's container when it exists with s's hash; one of another hash
// is removed (task, container, anonymous volumes) and nil returned.
func (r *Runtime) currentService(ctx context.Context, c *containerd.Client, s ServiceSpec) (containerd.Container, error) {
	ctr, err := c.LoadContainer(ctx, ServiceContainerID(s.ID))
	if errdefs.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("load container: %w", err)
	}
	if err := r.ours(ctx, ctr); err != nil {
		return nil, err
	}
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return nil, fmt.Errorf("container labels: %w", err)
	}
	if labels[LabelHash] == s.Hash {
		return ctr, nil
	}
	r.logf("service %s: definition changed (hash %s → %s): recreating", s.ID, labels[LabelHash], s.Hash)
	if err := r.removeServiceContainer(ctx, ctr, s.ID); err != nil {
		return nil, err
	}
	return nil, nil
}

// adoptService returns the pid of ctr's running task, if it has one; a task that is not
// running is deleted (its exit code kept for WaitService).
func (r *Runtime) adoptService(ctx context.Context, ctr containerd.Container, id string) (int, bool) {
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		return 0, false
	}
	ts, err := task.Status(ctx)
	if err == nil && ts.Status == containerd.Paused {
		err = task.Resume(ctx)
		ts.Status = containerd.Running
	}
	if err == nil && ts.Status == containerd.Running {
		r.logf("service %s: adopted running task, pid %d", id, task.Pid())
		return int(task.Pid()), true
	}
	if err := r.endTask(ctx, task, id); err != nil {
		r.logf("service %s: delete old task: %v", id, err)
	}
	return 0, false
}

// createService makes the container of s and everything it needs on the machine. On failure
// it removes the container it made; the network and files stay for DeleteService.
func (r *Runtime) createService(ctx context.Context, c *containerd.Client, s ServiceSpec, progress func(Status)) (containerd.Container, error) {
	img, err := r.ensureImage(ctx, c, Spec{Name: s.ID, Image: s.Service.Image}, progress)
	if err != nil {
		return nil, err
	}
	args, err := serviceArgs(ctx, img, s)
	if err != nil {
		return nil, err
	}
	if err := r.prepareService(s); err != nil {
		return nil, err
	}
	fresh, err := r.makeVolumes(s)
	if err != nil {
		return nil, err
	}
	id := ServiceContainerID(s.ID)
	ctr, err := c.NewContainer(ctx, id,
		containerd.WithContainerLabels(r.serviceLabels(s)),
		containerd.WithImage(img),
		containerd.WithSnapshotter(r.snapshotter()),
		containerd.WithNewSnapshot(id, img),
		containerd.WithNewSpec(r.serviceSpecOpts(s, img, args)...),
	)
	if err != nil {
		r.deleteSnapshot(ctx, c, id)
		return nil, fmt.Errorf("create container: %w", err)
	}
	if err := r.copyUp(ctx, c, ctr, s, fresh); err != nil {
		if derr := ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup); derr != nil {
			r.logf("service %s: undo create: %v", s.ID, derr)
		}
		return nil, err
	}
	r.logf("service %s: container created", s.ID)
	return ctr, nil
}

func (r *Runtime) serviceLabels(s ServiceSpec) map[string]string {
	nc := ServiceNetConfig(s)
	l := map[string]string{}
	for k, v := range s.Service.Labels {
		l[k] = v
	}
	for k, v := range map[string]string{
		LabelMachine:     r.Machine,
		LabelOwner:       r.Identity,
		LabelService:     s.ID,
		LabelEnv:         s.Env,
		LabelEnvID:       s.EnvID,
		LabelServiceName: s.Service.Name,
		LabelHash:        s.Hash,
		LabelIPv4:        s.IPv4.String(),
		LabelNetns:       nc.Netns,
		LabelHostIf:      nc.HostIf,
	} {
		l[k] = v
	}
	if s.IPv6.IsValid() {
		l[LabelIPv6] = s.IPv6.String()
	}
	return l
}
