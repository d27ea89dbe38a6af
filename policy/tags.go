package policy

import (
	"slices"
	"strings"
)

// OwnsTag reports whether the policy's tagOwners let user give machines tag: the user is
// listed under the tag by name or through a group. Admins own every tag; that is the
// caller's rule to add, as the policy knows no roles.
func (p *Policy) OwnsTag(user, tag string) bool {
	for _, o := range p.TagOwners[tag] {
		if o == user || strings.HasPrefix(o, "group:") && slices.Contains(p.Groups[o], user) {
			return true
		}
	}
	return false
}
