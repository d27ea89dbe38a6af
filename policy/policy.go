// Package policy is the mesh policy file: who may reach what, who may SSH as whom, which exit
// a workspace uses. It parses and checks the HuJSON a user writes; compilers to packet
// filters and nftables rules build on it.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
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
	Hosts     map[string]string   `json:"hosts,omitempty"`  // "office": "10.1.0.0/16"
	Egress    []Egress            `json:"egress,omitempty"` // first match wins
	Tests     []Test              `json:"tests,omitempty"`

	testLines []int // the line each test starts on, for the errors that name it
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

// Egress pins the workspaces Src selects ("ws:NAME", "ws:owner:USER", "*") to exit Exit.
// Exits are named here only: whether one exists is the egress machinery's question.
type Egress struct {
	Src  []string `json:"src"`
	Exit string   `json:"exit"`
}

// Test says what Src (a user, a host or a selector) may reach ("ws:api:22") and may not.
// Setting a policy runs its tests against the compiled filter and the mesh of the moment.
type Test struct {
	Src    string   `json:"src"`
	Accept []string `json:"accept,omitempty"`
	Deny   []string `json:"deny,omitempty"`
}

const sections = "groups, tagOwners, hosts, acls, ssh, egress, tests"

// Parse reads a policy, with comments and trailing commas allowed, and checks it. Errors name
// the line and what to write instead.
func Parse(text []byte) (*Policy, error) {
	v, err := hujson.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("policy: %v", err)
	}
	v.Standardize() // keeps every byte offset, so lines stay the author's
	packed := v.Pack()
	dec := json.NewDecoder(bytes.NewReader(packed))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, decodeError(err, &v, packed)
	}
	loc := locator{v: &v, text: packed}
	if err := p.check(loc); err != nil {
		return nil, err
	}
	for i := range p.Tests {
		p.testLines = append(p.testLines, loc.line(fmt.Sprintf("/tests/%d", i)))
	}
	return &p, nil
}

// decodeError names the line a decode error is on and what the policy expects.
func decodeError(err error, v *hujson.Value, packed []byte) error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return fmt.Errorf("policy: line %d: %s: this is %s, write %s", lineAt(packed, int(typeErr.Offset)),
			typeErr.Field, typeErr.Value, typeName(typeErr.Type.String()))
	}
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name := strings.Trim(field, `"`)
		return fmt.Errorf("policy: line %d: unknown field %s (known sections: %s; acls and ssh rules hold action, src, dst (ssh: users); egress: src, exit; tests: src, accept, deny)",
			lineAt(packed, memberOffset(v, name)), field, sections)
	}
	return fmt.Errorf("policy: %v (known sections: %s)", err, sections)
}

func typeName(t string) string {
	switch {
	case strings.HasPrefix(t, "[]"):
		return `a list: ["…", …]`
	case strings.HasPrefix(t, "map"), strings.HasPrefix(t, "policy."):
		return `an object: {"…": …}`
	}
	return `a string: "…"`
}

// memberOffset is where the first object member named name starts, or 0.
func memberOffset(v *hujson.Value, name string) int {
	for v := range v.All() {
		obj, ok := v.Value.(*hujson.Object)
		if !ok {
			continue
		}
		for _, m := range obj.Members {
			if lit, ok := m.Name.Value.(hujson.Literal); ok && lit.String() == name {
				return m.Name.StartOffset
			}
		}
	}
	return 0
}

func lineAt(text []byte, off int) int {
	off = min(max(off, 0), len(text))
	return 1 + bytes.Count(text[:off], []byte("\n"))
}

// locator finds the line of a value by its JSON pointer ("/acls/0/dst/1").
type locator struct {
	v    *hujson.Value
	text []byte
}

func (l locator) line(ptr string) int {
	if l.v == nil {
		return 0
	}
	if f := l.v.Find(ptr); f != nil {
		return lineAt(l.text, f.StartOffset)
	}
	return 0
}

// errorf is a check error at the value ptr points to, named by where.
func (l locator) errorf(ptr, where, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if n := l.line(ptr); n > 0 {
		return fmt.Errorf("policy: line %d: %s: %s", n, where, msg)
	}
	return fmt.Errorf("policy: %s: %s", where, msg)
}

// pointerKey escapes a map key for a JSON pointer.
func pointerKey(k string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(k)
}
