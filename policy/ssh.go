package policy

import (
	"slices"
	"strings"
)

// SSHGrant lets Users (mesh user names, or "*" for anyone on the mesh) log in to a workspace
// as any of Logins ("root", the workspace's user by name, or "*" for any).
type SSHGrant struct {
	Users  []string `json:"users"`
	Logins []string `json:"logins"`
}

// SSHGrants are the grants the ssh rules give for workspace dst (named NAME or ws:NAME in a
// rule), groups expanded to users.
// Sources that are not users, groups or "*" (tags, addresses) grant nothing here: SSH is
// checked against who is calling, not from where.
func (p *Policy) SSHGrants(dst string) []SSHGrant {
	var out []SSHGrant
	for _, r := range p.SSH {
		if !slices.Contains(r.Dst, dst) && !slices.Contains(r.Dst, "ws:"+dst) && !slices.Contains(r.Dst, "*") {
			continue
		}
		var users []string
		for _, s := range r.Src {
			switch {
			case s == "*":
				users = append(users, "*")
			case strings.HasPrefix(s, "group:"):
				users = append(users, p.Groups[s]...)
			case !strings.Contains(s, ":") && !strings.ContainsAny(s, "./"):
				users = append(users, s)
			}
		}
		if len(users) > 0 {
			out = append(out, SSHGrant{Users: users, Logins: slices.Clone(r.Users)})
		}
	}
	return out
}

// Allows reports whether the grants let user log in as login, where wsUser is the
// workspace's own user.
func Allows(grants []SSHGrant, user, login, wsUser string) bool {
	for _, g := range grants {
		if !slices.Contains(g.Users, user) && !slices.Contains(g.Users, "*") {
			continue
		}
		for _, l := range g.Logins {
			if l == "*" || l == login || (login != "root" && l == wsUser) {
				return true
			}
		}
	}
	return false
}
