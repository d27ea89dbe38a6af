package fsm

import (
	"fmt"
	"net/textproto"
	"slices"
	"strings"
)

// Intercept modes and observed states (api.Intercept*).
const (
	InterceptGlobal   = "global"
	InterceptPersonal = "personal"
)

var interceptStates = []string{"pending", "active", "target-down", "failed"}

// Bounds of a personal intercept's header matchers.
const (
	MaxHeaders     = 8
	maxHeaderValue = 256
)

// Mode is global (no headers: every new connection) or personal (matching requests only).
func (ic *Intercept) Mode() string {
	if len(ic.Headers) == 0 {
		return InterceptGlobal
	}
	return InterceptPersonal
}

// Ref is how meshctl names the intercept: its name, or its ID when it has none.
func (ic *Intercept) Ref() string {
	if ic.Name != "" {
		return ic.Name
	}
	return ic.ID
}

// slot is the intercept's target with its header set: two intercepts never share one.
func (ic *Intercept) slot() string {
	var b strings.Builder
	b.WriteString(ic.Target)
	for _, h := range ic.Headers {
		fmt.Fprintf(&b, "\n%s=%s", h.Name, h.Value)
	}
	return b.String()
}

// CanonicalHeaders checks a personal intercept's header matchers and returns them with
// canonical names (X-Dev for x-dev), sorted by name: at most MaxHeaders, each name an HTTP
// token used once, each value printable ASCII.
func CanonicalHeaders(hs []HeaderMatch) ([]HeaderMatch, error) {
	if len(hs) > MaxHeaders {
		return nil, errorf(CodeInvalid, "%d header matchers: at most %d", len(hs), MaxHeaders)
	}
	var out []HeaderMatch
	for _, h := range hs {
		if err := checkHeader(h); err != nil {
			return nil, err
		}
		h.Name = textproto.CanonicalMIMEHeaderKey(h.Name)
		if slices.ContainsFunc(out, func(o HeaderMatch) bool { return o.Name == h.Name }) {
			return nil, errorf(CodeInvalid, "header %s given twice: give each header once (a request must match every one)", h.Name)
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b HeaderMatch) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func checkHeader(h HeaderMatch) error {
	if h.Name == "" || strings.IndexFunc(h.Name, func(r rune) bool { return !isTokenChar(r) }) >= 0 {
		return errorf(CodeInvalid, "header name %q: use letters, digits and !#$%%&'*+-.^_`|~ (an HTTP header name), as in X-Dev=alice", h.Name)
	}
	printable := strings.IndexFunc(h.Value, func(r rune) bool { return r < ' ' || r > '~' }) < 0
	if h.Value == "" || !printable || strings.TrimSpace(h.Value) != h.Value || len(h.Value) > maxHeaderValue {
		return errorf(CodeInvalid, "header %s: value %q: use 1 to %d printable ASCII characters, no leading or trailing space", h.Name, h.Value, maxHeaderValue)
	}
	return nil
}

// isTokenChar reports whether r may appear in an HTTP token (RFC 9110).
func isTokenChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)
}

func interceptCreate(t *tx) (any, string, error) {
	var ic Intercept
	if err := t.decode(&ic); err != nil {
		return nil, "", err
	}
	e, err := checkIntercept(t, &ic)
	if err != nil {
		return nil, "", err
	}
	if err := interceptFree(t, &ic); err != nil {
		return nil, "", err
	}
	ic.CreatedAt, ic.State, ic.Reason, ic.Connections, ic.Requests, ic.StateAt = t.c.Time, "pending", "", 0, 0, t.c.Time
	t.add(tIntercepts, &ic)
	touchNode(t, e.Machine) // its machine's state and the packet filter change
	t.detail = fmt.Sprintf("%s %s to %s:%d", ic.Mode(), ic.Target, ic.Workspace, ic.WorkspacePort)
	return &ic, "intercept/" + ic.Ref(), nil
}

// checkIntercept checks what a new intercept names and fills in its target, slot and
// canonical headers; it returns the intercepted service's environment.
func checkIntercept(t *tx, ic *Intercept) (*Environment, error) {
	if ic.ID == "" || get[Intercept](t, tIntercepts, "id", ic.ID) != nil || get[Intercept](t, tIntercepts, "name", ic.ID) != nil {
		return nil, errorf(CodeInvalid, "intercept: missing or duplicate ID")
	}
	if ic.Name != "" {
		if err := ValidName("intercept", ic.Name); err != nil {
			return nil, err
		}
		if get[Intercept](t, tIntercepts, "name", ic.Name) != nil || get[Intercept](t, tIntercepts, "id", ic.Name) != nil {
			return nil, errorf(CodeConflict, "an intercept named %q already exists: choose another --name, or stop it (meshctl intercept stop %s)", ic.Name, ic.Name)
		}
	}
	e := get[Environment](t, tEnvs, "name", ic.Env)
	if e == nil {
		return nil, errorf(CodeNotFound, "no environment %q (see meshctl env list)", ic.Env)
	}
	svc := findService(e, ic.Service)
	if svc == nil {
		return nil, errorf(CodeNotFound, "environment %q has no service %q (it has %s)", e.Name, ic.Service, serviceNames(e))
	}
	if err := firstErr(validPort("port", ic.Port), exposes(e, svc, ic.Port), validPort("workspace port", ic.WorkspacePort)); err != nil {
		return nil, err
	}
	if get[Workspace](t, tWorkspaces, "name", ic.Workspace) == nil {
		return nil, errorf(CodeNotFound, "no workspace %q (see meshctl ws list)", ic.Workspace)
	}
	hs, err := CanonicalHeaders(ic.Headers)
	if err != nil {
		return nil, err
	}
	ic.Headers = hs
	ic.Target = fmt.Sprintf("%s/%s:%d", ic.Env, ic.Service, ic.Port)
	ic.Slot = ic.slot()
	return e, nil
}

// exposes refuses a port service svc does not declare (compose ports: or expose:).
func exposes(e *Environment, svc *Service, port int) error {
	if slices.Contains(svc.Ports, port) {
		return nil
	}
	if len(svc.Ports) == 0 {
		return errorf(CodeInvalid, "service %s of environment %q exposes no ports, so there is no port %d to intercept: declare it under ports: or expose: in the compose file (meshctl env update %s -f FILE)", svc.Name, e.Name, port, e.Name)
	}
	var ps []string
	for _, p := range svc.Ports {
		ps = append(ps, fmt.Sprint(p))
	}
	return errorf(CodeInvalid, "service %s of environment %q does not expose port %d (it exposes %s)", svc.Name, e.Name, port, strings.Join(ps, ", "))
}

// interceptFree refuses an intercept that clashes with one on the same port: the same
// header set (two globals included), or a global beside personal ones.
func interceptFree(t *tx, ic *Intercept) error {
	for _, o := range all[Intercept](t.Txn, tIntercepts, "target", ic.Target) {
		var why string
		switch {
		case o.slot() == ic.Slot && ic.Mode() == InterceptGlobal:
			why = "already intercepted (global)"
		case o.slot() == ic.Slot:
			why = "already intercepted with the same headers"
		case o.Mode() != ic.Mode():
			why = fmt.Sprintf("intercepted by a %s intercept, and global and personal intercepts cannot share a port", o.Mode())
		default:
			continue
		}
		return errorf(CodeConflict, "%s is %s: intercept %s, to %s:%d; stop it first (meshctl intercept stop %s)",
			ic.Target, why, o.Ref(), o.Workspace, o.WorkspacePort, o.Ref())
	}
	return nil
}

func interceptDelete(t *tx) (any, string, error) {
	var req ByID
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	ic := get[Intercept](t, tIntercepts, "id", req.ID)
	if ic == nil {
		return nil, "", errorf(CodeNotFound, "no intercept %q", req.ID)
	}
	t.del(tIntercepts, ic)
	if e := get[Environment](t, tEnvs, "name", ic.Env); e != nil {
		touchNode(t, e.Machine)
	}
	t.detail = fmt.Sprintf("%s %s to %s:%d", ic.Mode(), ic.Target, ic.Workspace, ic.WorkspacePort)
	return nil, "intercept/" + ic.Ref(), nil
}

// endIntercepts deletes ics as part of the command being applied (the deletion of their
// workspace, environment or owner), and says so in its audit event.
func endIntercepts(t *tx, ics []*Intercept) {
	if len(ics) == 0 {
		return
	}
	var refs []string
	for _, ic := range ics {
		t.del(tIntercepts, ic)
		if e := get[Environment](t, tEnvs, "name", ic.Env); e != nil {
			touchNode(t, e.Machine)
		}
		refs = append(refs, fmt.Sprintf("%s (%s to %s:%d)", ic.Ref(), ic.Target, ic.Workspace, ic.WorkspacePort))
	}
	t.detail = "ended intercept(s) " + strings.Join(refs, ", ")
}

// InterceptStatus is the payload of intercept.status: what the agent on Machine observed
// of the intercepts of the services it runs.
type InterceptStatus struct {
	Machine    string              `json:"machine"`
	Intercepts []InterceptObserved `json:"intercepts"`
}

// InterceptObserved is one intercept's observed state.
type InterceptObserved struct {
	ID          string `json:"id"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
	Connections uint64 `json:"connections,omitempty"`
	Requests    uint64 `json:"requests,omitempty"`
}

// interceptStatus records observed states. Intercepts ended meanwhile are skipped; one whose
// service another machine runs refuses the whole report.
func interceptStatus(t *tx) (any, string, error) {
	var req InterceptStatus
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	var changed []*Intercept
	for _, st := range req.Intercepts {
		ic := get[Intercept](t, tIntercepts, "id", st.ID)
		if ic == nil {
			continue
		}
		if err := st.check(t, ic, req.Machine); err != nil {
			return nil, "", err
		}
		if !ic.Holds(st) {
			c := *ic
			st.apply(&c, t)
			changed = append(changed, &c)
		}
	}
	for _, c := range changed {
		t.put(tIntercepts, c)
	}
	return nil, "node/" + req.Machine, nil
}

func (st *InterceptObserved) check(t *tx, ic *Intercept, machine string) error {
	if e := get[Environment](t, tEnvs, "name", ic.Env); e == nil || e.Machine != machine {
		return errorf(CodeForbidden, "intercept %s: its service %s does not run on machine %q", ic.Ref(), ic.Target, machine)
	}
	if !slices.Contains(interceptStates, st.State) {
		return errorf(CodeInvalid, "intercept %s: state %q: use one of %s", ic.Ref(), st.State, strings.Join(interceptStates, ", "))
	}
	st.Reason = cut(st.Reason, maxReason)
	return nil
}

func (st *InterceptObserved) apply(ic *Intercept, t *tx) {
	if ic.State != st.State {
		ic.StateAt = t.c.Time
	}
	ic.State, ic.Reason, ic.Connections, ic.Requests = st.State, st.Reason, st.Connections, st.Requests
}

// Holds reports whether ic already holds what st reports (as intercept.status would store
// it): a report that would change nothing need not be written.
func (ic *Intercept) Holds(st InterceptObserved) bool {
	return ic.State == st.State && ic.Reason == cut(st.Reason, maxReason) &&
		ic.Connections == st.Connections && ic.Requests == st.Requests
}
