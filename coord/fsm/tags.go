package fsm

import (
	"slices"

	"meshwork.dev/policy"
)

// WorkmachineTag marks the machines that may host workspaces and environments. Like every
// tag, only admins and the tag's owners in the policy may give it to a machine.
const WorkmachineTag = "tag:workmachine"

// checkTagOwner checks that user u may give machines each of tags (Tailscale's tagOwners):
// admins any tag, others only those the policy's tagOwners give them — with no policy, none.
func checkTagOwner(t *tx, u *User, tags []string) error {
	if u.Role == RoleAdmin || len(tags) == 0 {
		return nil
	}
	var p *policy.Policy
	if row := get[policyRow](t, tPolicy, "id", "policy"); row != nil && row.Policy.Text != "" {
		p, _ = policy.Parse([]byte(row.Policy.Text)) // checked when set; one that fails grants nothing
	}
	for _, tag := range tags {
		if p == nil || !p.OwnsTag(u.Name, tag) {
			return errorf(CodeForbidden, "%s is not an owner of %s: only admins and the owners the policy's tagOwners lists may give machines a tag", u.Name, tag)
		}
	}
	return nil
}

// checkWorkmachine checks that the machine called name may host workspaces and environments.
func checkWorkmachine(t *tx, name string) error {
	n := get[Node](t, tNodes, "name", name)
	switch {
	case n == nil:
		return errorf(CodeNotFound, "no machine %q: see meshctl node list for the machines on the mesh", name)
	case !slices.Contains(n.Tags, WorkmachineTag):
		return errorf(CodeInvalid, "machine %q is not a workmachine: only machines tagged %s host workspaces (an admin joins one with meshctl authkey create --tag %s, or tags it with meshctl node tag %s %s)", name, WorkmachineTag, WorkmachineTag, name, WorkmachineTag)
	}
	return nil
}

// NodeTags is the payload of node.tag: the tags a user gives a machine, replacing its own.
type NodeTags struct {
	Name   string   `json:"name"`
	UserID string   `json:"user_id"` // who asks: admins may give any tag, others the tags they own
	Tags   []string `json:"tags"`
}

func nodeTag(t *tx) (any, string, error) {
	var req NodeTags
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	old := get[Node](t, tNodes, "name", req.Name)
	if old == nil {
		return nil, "", errorf(CodeNotFound, "no node %q", req.Name)
	}
	u := get[User](t, tUsers, "id", req.UserID)
	if u == nil {
		return nil, "", errorf(CodeNotFound, "no user with ID %q", req.UserID)
	}
	if err := checkTags(req.Tags); err != nil {
		return nil, "", err
	}
	for _, tag := range req.Tags {
		if err := validTag(tag); err != nil {
			return nil, "", err
		}
	}
	// Taking a tag away is giving up its rights: the owner of the tag decides that too.
	if err := checkTagOwner(t, u, symmetricDiff(old.Tags, req.Tags)); err != nil {
		return nil, "", err
	}
	if !slices.Contains(req.Tags, WorkmachineTag) {
		if ws := all[Workspace](t.Txn, tWorkspaces, "machine", old.Name); len(ws) > 0 {
			return nil, "", errorf(CodeConflict, "node %q hosts %d workspace(s), %s first: it stays %s until they are deleted", old.Name, len(ws), ws[0].Name, WorkmachineTag)
		}
		if envs := all[Environment](t.Txn, tEnvs, "machine", old.Name); len(envs) > 0 {
			return nil, "", errorf(CodeConflict, "node %q hosts %d environment(s), %s first: it stays %s until they are deleted", old.Name, len(envs), envs[0].Name, WorkmachineTag)
		}
	}
	n := *old
	n.Tags = slices.Clone(req.Tags)
	slices.Sort(n.Tags)
	n.Tags = slices.Compact(n.Tags)
	if len(n.Tags) == 0 {
		n.Tags = nil
	}
	t.put(tNodes, &n)
	return &n, "node/" + n.Name, nil
}

// symmetricDiff is the tags in one of a and b but not both.
func symmetricDiff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) && !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}
