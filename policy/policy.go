// Package policy is the mesh policy file: who may reach what, who may SSH as whom, which exit
// a workspace uses. It parses and checks the HuJSON a user writes; compilers to packet
// filters and nftables rules build on it.
package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tailscale/hujson"
)

// Policy is a parsed policy file.
type Policy struct {
	Groups    map[string][]string `json:"groups,omitempty"`    // "group:dev": ["alice", ...]
	TagOwners map[string][]string `json:"tagOwners,omitempty"` // "tag:wm": ["group:ops", ...]
	ACLs      []ACL               `json:"acls,omitempty"`
	SSH       []SSHRule           `json:"ssh,omitempty"`
	Hosts     map[string]string   `json:"hosts,omitempty"`
}

// ACL lets sources reach destinations ("host:ports").
type ACL struct {
	Action string   `json:"action"` // "accept"
	Src    []string `json:"src"`
	Dst    []string `json:"dst"`
}

// SSHRule lets sources SSH into destinations as users.
type SSHRule struct {
	Action string   `json:"action"` // "accept"
	Src    []string `json:"src"`
	Dst    []string `json:"dst"`
	Users  []string `json:"users"`
}

// Parse reads a policy, with comments and trailing commas allowed, and checks it. Errors name
// the line and what to write instead.
func Parse(text []byte) (*Policy, error) {
	v, err := hujson.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("policy: %v", err)
	}
	v.Standardize()
	dec := json.NewDecoder(bytes.NewReader(v.Pack()))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("policy: %v (known sections: groups, tagOwners, acls, ssh, hosts)", err)
	}
	return &p, p.check()
}

func (p *Policy) check() error {
	for g := range p.Groups {
		if !strings.HasPrefix(g, "group:") {
			return fmt.Errorf("policy: groups: %q must be written group:NAME", g)
		}
	}
	for t, owners := range p.TagOwners {
		if !strings.HasPrefix(t, "tag:") {
			return fmt.Errorf("policy: tagOwners: %q must be written tag:NAME", t)
		}
		if err := p.checkRefs("tagOwners["+t+"]", owners); err != nil {
			return err
		}
	}
	for i, a := range p.ACLs {
		if a.Action != "accept" {
			return fmt.Errorf("policy: acls[%d]: action %q: the only action is accept (everything else is denied)", i, a.Action)
		}
		if len(a.Src) == 0 || len(a.Dst) == 0 {
			return fmt.Errorf("policy: acls[%d]: needs src and dst", i)
		}
		for _, d := range a.Dst {
			if _, _, err := splitDst(d); err != nil {
				return fmt.Errorf("policy: acls[%d]: %w (api:443, *:*)", i, err)
			}
		}
		if err := p.checkRefs(fmt.Sprintf("acls[%d]", i), a.Src); err != nil {
			return err
		}
	}
	for i, s := range p.SSH {
		if s.Action != "accept" {
			return fmt.Errorf("policy: ssh[%d]: action %q: the only action is accept", i, s.Action)
		}
		if len(s.Src) == 0 || len(s.Dst) == 0 || len(s.Users) == 0 {
			return fmt.Errorf("policy: ssh[%d]: needs src, dst and users", i)
		}
		if err := p.checkRefs(fmt.Sprintf("ssh[%d]", i), s.Src); err != nil {
			return err
		}
	}
	return nil
}

// checkRefs checks that every group named in srcs is defined.
func (p *Policy) checkRefs(where string, srcs []string) error {
	for _, s := range srcs {
		if strings.HasPrefix(s, "group:") {
			if _, ok := p.Groups[s]; !ok {
				return fmt.Errorf("policy: %s: %s is not defined under groups", where, s)
			}
		}
	}
	return nil
}
