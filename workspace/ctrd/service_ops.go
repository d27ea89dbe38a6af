package ctrd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"

	"meshwork.dev/workspace/wsnet"
)

// errNoService and errServiceNotRunning read as services' and match ErrNotFound and
// ErrNotRunning.
var (
	errNoService         = sentinel{"no such service", ErrNotFound}
	errServiceNotRunning = sentinel{"service is not running", ErrNotRunning}
)

type sentinel struct {
	msg string
	is  error
}

func (e sentinel) Error() string        { return e.msg }
func (e sentinel) Is(target error) bool { return target == e.is }

// exitFile, in a service's dir, keeps the exit code of its last task once the task is gone.
const exitFile = "exit"

// serviceContainer returns this runtime's container of service id, or an error wrapping
// ErrNotFound.
func (r *Runtime) serviceContainer(ctx context.Context, c *containerd.Client, id string) (containerd.Container, error) {
	ctr, err := c.LoadContainer(ctx, ServiceContainerID(id))
	if errdefs.IsNotFound(err) {
		return nil, errNoService
	} else if err != nil {
		return nil, fmt.Errorf("load container: %w", err)
	}
	ok, err := r.owns(ctx, ctr)
	if err != nil {
		return nil, err
	}
	if labels, err := ctr.Labels(ctx); !ok || err != nil || labels[LabelService] != id {
		return nil, errNoService
	}
	return ctr, nil
}

// endTask deletes task (killing it if it runs), keeping its exit code for WaitService.
func (r *Runtime) endTask(ctx context.Context, task containerd.Task, id string) error {
	st, err := task.Delete(ctx, containerd.WithProcessKill)
	// containerd 1.6 may answer the exit of a killed task before its shim stops calling it
	// running: ask again, briefly.
	for try := 0; err != nil && strings.Contains(err.Error(), "cannot delete a running process") && try < 20; try++ {
		time.Sleep(100 * time.Millisecond)
		st, err = task.Delete(ctx, containerd.WithProcessKill)
	}
	if errdefs.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("delete task: %w", err)
	}
	return os.WriteFile(filepath.Join(r.serviceDir(id), exitFile), []byte(strconv.Itoa(int(st.ExitCode()))+"\n"), 0o644)
}

func (r *Runtime) lastExit(id string) int {
	b, _ := os.ReadFile(filepath.Join(r.serviceDir(id), exitFile))
	code, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return code
}

// removeServiceContainer removes ctr with its task, snapshot, anonymous volumes and secrets.
func (r *Runtime) removeServiceContainer(ctx context.Context, ctr containerd.Container, id string) error {
	if task, err := ctr.Task(ctx, nil); err == nil {
		if err := r.endTask(ctx, task, id); err != nil {
			return err
		}
	}
	if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container: %w", err)
	}
	return errors.Join(os.RemoveAll(r.anonDir(id)), r.unmountSecrets(id))
}

// StopService stops service id's task (SIGTERM, StopGrace, SIGKILL) and deletes it; the
// container, volumes, network and addresses stay. Stopping a stopped service is fine.
func (r *Runtime) StopService(ctx context.Context, id string) error {
	defer r.lock("service " + id)()
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return err
	}
	if err := r.stopService(ctx, c, id); err != nil {
		return fmt.Errorf("service stop %s: %w", id, err)
	}
	return nil
}

func (r *Runtime) stopService(ctx context.Context, c *containerd.Client, id string) error {
	ctr, err := r.serviceContainer(ctx, c, id)
	if err != nil {
		return err
	}
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
	return r.endTask(ctx, task, id)
}

// DeleteService removes service id: task, container, snapshot, network namespace, veth,
// anonymous volumes, secrets tmpfs, configs and log. Named volumes stay (DeleteVolumes).
// Deleting what is gone is fine.
func (r *Runtime) DeleteService(ctx context.Context, id string) error {
	defer r.lock("service " + id)()
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return err
	}
	if err := r.deleteService(ctx, c, id); err != nil {
		return fmt.Errorf("service delete %s: %w", id, err)
	}
	return nil
}

func (r *Runtime) deleteService(ctx context.Context, c *containerd.Client, id string) error {
	st, haveNet := r.loadServiceState(id)
	ctr, err := r.serviceContainer(ctx, c, id)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return err
	default:
		if labels, err := ctr.Labels(ctx); err == nil {
			if nc, err := netConfigFromLabels(labels); err == nil {
				st.Net, haveNet = nc, true
			}
		}
		if err := r.removeServiceContainer(ctx, ctr, id); err != nil {
			return err
		}
	}
	var errs []error
	if haveNet {
		errs = append(errs, wsnet.Teardown(st.Net))
	}
	return errors.Join(append(errs,
		r.unmountSecrets(id),
		os.RemoveAll(r.serviceDir(id)),
		removeIfExists(r.ServiceLogPath(id)),
	)...)
}

// DeleteVolumes removes environment envID's named volumes.
func (r *Runtime) DeleteVolumes(ctx context.Context, envID string) error {
	if err := r.check(); err != nil {
		return err
	}
	if !idRE.MatchString(envID) {
		return fmt.Errorf("volumes delete: environment id %q: letters and digits joined by . _ or -", envID)
	}
	if err := os.RemoveAll(r.volumesDir(envID)); err != nil {
		return fmt.Errorf("volumes delete %s: %w", envID, err)
	}
	return nil
}

// ListServices lists this runtime's service containers (never workspaces).
func (r *Runtime) ListServices(ctx context.Context) ([]ServiceStatus, error) {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return nil, err
	}
	ctrs, err := c.Containers(ctx, fmt.Sprintf("labels.%q==%q,labels.%q", LabelMachine, r.Machine, LabelService))
	if err == nil {
		ctrs, err = r.mine(ctx, ctrs)
	}
	if err != nil {
		return nil, fmt.Errorf("service list: %w", err)
	}
	out := make([]ServiceStatus, 0, len(ctrs))
	for _, ctr := range ctrs {
		st, err := r.serviceStatus(ctx, ctr)
		if errdefs.IsNotFound(err) {
			continue // deleted since listed
		} else if err != nil {
			return nil, fmt.Errorf("service list: %w", err)
		}
		out = append(out, st)
	}
	return out, nil
}

// serviceStatus reads a service container's labels and its task's state.
func (r *Runtime) serviceStatus(ctx context.Context, ctr containerd.Container) (ServiceStatus, error) {
	l, err := ctr.Labels(ctx)
	if err != nil {
		return ServiceStatus{}, err
	}
	st := ServiceStatus{ID: l[LabelService], Env: l[LabelEnv], EnvID: l[LabelEnvID], Name: l[LabelServiceName],
		Hash: l[LabelHash], State: StateStopped}
	st.ExitCode = r.lastExit(st.ID)
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return st, nil
	} else if err != nil {
		return st, err
	}
	ts, err := task.Status(ctx)
	if errdefs.IsNotFound(err) {
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
		st.ExitCode = int(ts.ExitStatus)
	}
	return st, nil
}

// WaitService blocks until service id's running task exits and returns its exit code; with
// no running task it returns at once with the last exit code (0 if unknown).
func (r *Runtime) WaitService(ctx context.Context, id string) (int, error) {
	c, cctx, err := r.conn(ctx)
	if err != nil {
		return 0, err
	}
	ctr, err := r.serviceContainer(cctx, c, id)
	if err != nil {
		return 0, fmt.Errorf("service wait %s: %w", id, err)
	}
	task, err := ctr.Task(cctx, nil)
	if errdefs.IsNotFound(err) {
		return r.lastExit(id), nil
	} else if err != nil {
		return 0, fmt.Errorf("service wait %s: load task: %w", id, err)
	}
	exited, err := task.Wait(cctx)
	if errdefs.IsNotFound(err) {
		return r.lastExit(id), nil
	} else if err != nil {
		return 0, fmt.Errorf("service wait %s: %w", id, err)
	}
	select {
	case st := <-exited:
		code, _, err := st.Result()
		if errdefs.IsNotFound(err) { // deleted while we waited (StopService)
			return r.lastExit(id), nil
		}
		return int(code), err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// SetServicePeers replaces, live, whom service id knows and who may reach it: hosts are its
// environment's services by name (its /etc/hosts, rewritten in place so the running container
// sees it at once), and the guard in its namespace lets in their addresses and allow, and
// drops every other new connection. Open connections stay.
func (r *Runtime) SetServicePeers(ctx context.Context, id string, hosts []HostEntry, allow []netip.Prefix) error {
	if err := r.check(); err != nil {
		return err
	}
	defer r.lock("service " + id)()
	st, ok := r.loadServiceState(id)
	if !ok || !wsnet.Exists(st.Net) {
		return fmt.Errorf("service peers %s: %w (run it first)", id, errNoService)
	}
	st.Hosts, st.Allow = hosts, allow
	b, _ := json.Marshal(st)
	dir := r.serviceDir(id)
	if err := errors.Join(writeInPlace(filepath.Join(dir, serviceFile), string(b)+"\n"),
		writeInPlace(filepath.Join(dir, "hosts"), st.hostsFile())); err != nil {
		return fmt.Errorf("service peers %s: %w", id, err)
	}
	if err := guard(st); err != nil {
		return fmt.Errorf("service peers %s: %w", id, err)
	}
	return nil
}
