package ctrd

import (
	"context"
	"errors"
	"fmt"
	"slices"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// LabelOwner holds the Runtime.Identity that made a container. Runtimes sharing one containerd
// (two clusters, two labs) may have machines of the same name; the owner tells them apart.
const LabelOwner = "meshwork.owner"

// mine returns those of ctrs this runtime owns: labelled with its machine and identity, or
// made by an older build (no owner label) for this machine name and this Dir, which it claims
// by labelling them with its identity. It never returns, nor changes, another's container.
func (r *Runtime) mine(ctx context.Context, ctrs []containerd.Container) ([]containerd.Container, error) {
	if err := r.checkIdentity(); err != nil {
		return nil, err
	}
	var out []containerd.Container
	for _, ctr := range ctrs {
		ok, err := r.owns(ctx, ctr)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, ctr)
		}
	}
	return out, nil
}

// checkIdentity fails when the runtime has no Identity: it could not tell its containers from
// another's.
func (r *Runtime) checkIdentity() error {
	if r.Identity == "" {
		return errors.New("ctrd: Runtime.Identity is empty: set it to the machine's stable node ID from coord (two clusters may each have a machine of this name)")
	}
	return nil
}

// owns reports whether ctr is this runtime's, claiming it if an older build made it here.
func (r *Runtime) owns(ctx context.Context, ctr containerd.Container) (bool, error) {
	labels, err := ctr.Labels(ctx)
	if errdefs.IsNotFound(err) { // deleted since it was listed
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("container %s labels: %w", ctr.ID(), err)
	}
	if err := r.checkIdentity(); err != nil {
		return false, err
	}
	if labels[LabelMachine] != r.Machine {
		return false, nil
	}
	if owner, ok := labels[LabelOwner]; ok {
		return owner == r.Identity, nil
	}
	if !r.madeHere(ctx, ctr, labels[LabelWorkspace]) {
		return false, nil
	}
	if _, err := ctr.SetLabels(ctx, map[string]string{LabelOwner: r.Identity}); err != nil {
		return false, fmt.Errorf("claim container %s made by an older agent: %w", ctr.ID(), err)
	}
	r.logf("ws %s: container %s made by an older agent, now labelled %s=%s", labels[LabelWorkspace], ctr.ID(), LabelOwner, r.Identity)
	return true, nil
}

// madeHere reports whether ctr mounts workspace name's directory under this runtime's Dir:
// what marks an unlabelled container as made by this machine's agent and not by another
// agent with the same machine name.
func (r *Runtime) madeHere(ctx context.Context, ctr containerd.Container, name string) bool {
	spec, err := ctr.Spec(ctx)
	if err != nil || name == "" {
		return false
	}
	return slices.ContainsFunc(spec.Mounts, func(m specs.Mount) bool { return m.Source == r.wsDir(name) })
}
