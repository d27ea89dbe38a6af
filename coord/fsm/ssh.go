package fsm

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Session is an SSH session into a workspace, as the agent that served it reports it. Who
// called is not the agent's word: the FSM finds the machine behind From in its own records.
type Session struct {
	ID          string        `json:"id"`
	Workspace   string        `json:"workspace"`
	WorkspaceID string        `json:"workspace_id,omitempty"` // set by the FSM, as the next two
	OwnerID     string        `json:"owner_id,omitempty"`     // the workspace's owner then
	UserID      string        `json:"user_id,omitempty"`      // the caller's user ("" for a tagged machine)
	Machine     string        `json:"machine"`                // the reporting machine (set by coord from its key)
	User        string        `json:"user"`                   // who: the caller's user name, or its machine's tags
	Node        string        `json:"node"`                   // from which machine
	From        string        `json:"from"`                   // source address
	Login       string        `json:"login"`                  // as whom inside the workspace
	Command     string        `json:"command,omitempty"`
	PTY         bool          `json:"pty,omitempty"`
	Start       time.Time     `json:"start"`
	Duration    time.Duration `json:"duration,omitempty"`
	BytesIn     int64         `json:"bytes_in,omitempty"`
	BytesOut    int64         `json:"bytes_out,omitempty"`
	ExitCode    int           `json:"exit_code,omitempty"`
}

// SessionEnd is the payload of ssh.end: the session and, for a PTY session, its recording.
type SessionEnd struct {
	Session
	Cast      []byte `json:"cast,omitempty"` // asciicast v2, gzip-compressed
	CastSize  int64  `json:"cast_size,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Recording is a PTY session's asciicast, kept with what is known of its session.
type Recording struct {
	Session
	Seq       uint64 `json:"seq"`  // the log index it arrived at: recordings are kept in this order
	Cast      []byte `json:"cast"` // gzip
	CastSize  int64  `json:"cast_size"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Bounds on recordings: each compressed cast, and how many and how many bytes are kept per
// workspace (its oldest go first). A workspace's flood of sessions pushes out only its own.
const (
	MaxCast                 = 1 << 20
	MaxRecordings           = 100
	MaxRecordingBytes int64 = 16 << 20
)

func sshStart(t *tx) (any, string, error) {
	var s Session
	if err := t.decode(&s); err != nil {
		return nil, "", err
	}
	if err := checkSession(t, &s); err != nil {
		return nil, "", err
	}
	t.detail = fmt.Sprintf("session %s: %s from %s (%s) as %s%s", s.ID, caller(&s), s.Node, s.From, s.Login, commandNote(s.Command))
	return nil, "workspace/" + s.Workspace, nil
}

// sshBlock records that a machine's SSH shield blocked an address (Command holds why).
func sshBlock(t *tx) (any, string, error) {
	var s Session
	if err := t.decode(&s); err != nil {
		return nil, "", err
	}
	if s.Machine == "" || s.From == "" {
		return nil, "", errorf(CodeInvalid, "a shield block needs its machine and address")
	}
	t.detail = fmt.Sprintf("%s blocked SSH from %s (%s)", s.Machine, s.From, s.Command)
	return nil, "node/" + s.Machine, nil
}

func sshEnd(t *tx) (any, string, error) {
	var e SessionEnd
	if err := t.decode(&e); err != nil {
		return nil, "", err
	}
	if err := checkSession(t, &e.Session); err != nil {
		return nil, "", err
	}
	if len(e.Cast) > MaxCast {
		return nil, "", errorf(CodeInvalid, "session %s: recording of %d bytes compressed, over the %d the agent must cut it to", e.ID, len(e.Cast), MaxCast)
	}
	t.detail = fmt.Sprintf("session %s: %s from %s as %s, %v, %d bytes in, %d out, exit %d",
		e.ID, caller(&e.Session), e.Node, e.Login, e.Duration.Round(time.Millisecond), e.BytesIn, e.BytesOut, e.ExitCode)
	if len(e.Cast) > 0 {
		if get[Recording](t, tRecordings, "id", e.ID) != nil {
			return nil, "", errorf(CodeConflict, "session %s already has a recording", e.ID)
		}
		t.add(tRecordings, &Recording{Session: e.Session, Seq: t.index, Cast: e.Cast, CastSize: e.CastSize, Truncated: e.Truncated})
		pruneRecordings(t, e.WorkspaceID)
	}
	return nil, "workspace/" + e.Workspace, nil
}

func checkSession(t *tx, s *Session) error {
	if s.ID == "" || s.Workspace == "" {
		return errorf(CodeInvalid, "a session needs an ID and a workspace")
	}
	if err := checkLen("a session ID", s.ID, maxKeyText); err != nil {
		return err
	}
	// Cut, not refused: the session happened, and its audit line must stay.
	s.From, s.Login, s.Command = cut(s.From, MaxEndpoint), cut(s.Login, MaxHostname), cut(s.Command, MaxCommand)
	w := get[Workspace](t, tWorkspaces, "name", s.Workspace)
	if w == nil {
		return errorf(CodeNotFound, "no workspace %q", s.Workspace)
	}
	if w.Machine != s.Machine {
		return errorf(CodeConflict, "workspace %q is on machine %q, not %q", s.Workspace, w.Machine, s.Machine)
	}
	s.WorkspaceID, s.OwnerID = w.ID, w.OwnerID
	s.User, s.UserID, s.Node = "", "", ""
	if n := nodeAt(t, s.From); n != nil {
		s.Node, s.User = n.Name, strings.Join(n.Tags, ",")
		if u := get[User](t, tUsers, "id", n.UserID); u != nil && len(n.Tags) == 0 {
			s.User, s.UserID = u.Name, u.ID
		}
	}
	return nil
}

// nodeAt is the machine that holds the mesh address in from ("ip" or "ip:port"): the node
// itself, or the machine hosting the workspace that has it. nil when none does.
func nodeAt(t *tx, from string) *Node {
	a, err := netip.ParseAddr(from)
	if ap, perr := netip.ParseAddrPort(from); perr == nil {
		a, err = ap.Addr(), nil
	}
	if err != nil {
		return nil
	}
	if a = a.Unmap(); a.Is6() {
		if ula, err := netip.ParsePrefix(meta(t.Txn, "ula")); err != nil || !ula.Contains(a) {
			return nil
		}
		b := a.As16() // a mesh IPv6 is the cluster's prefix and its IPv4 twin (ipam.IPv6)
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	l := get[addrLease](t, tAddrs, "id", a.String())
	if l == nil {
		return nil
	}
	kind, name, _ := strings.Cut(l.Owner, "/")
	if kind == "workspace" {
		w := get[Workspace](t, tWorkspaces, "name", name)
		if w == nil {
			return nil
		}
		kind, name = "node", w.Machine
	}
	if kind != "node" {
		return nil
	}
	return get[Node](t, tNodes, "name", name)
}

// cut shortens s to at most limit bytes.
func cut(s string, limit int) string {
	if len(s) > limit {
		return s[:limit]
	}
	return s
}

// caller names who called in a session, for the audit log.
func caller(s *Session) string {
	if s.User == "" {
		return "an address that is no machine on the mesh"
	}
	return s.User
}

func commandNote(cmd string) string {
	if cmd == "" {
		return ", a shell"
	}
	if len(cmd) > 200 {
		cmd = cmd[:200] + "…"
	}
	return ", running " + cmd
}

// pruneRecordings drops workspace wsID's oldest recordings past MaxRecordings or
// MaxRecordingBytes.
func pruneRecordings(t *tx, wsID string) {
	recs := all[Recording](t.Txn, tRecordings, "workspace", wsID)
	slices.SortFunc(recs, func(a, b *Recording) int { return cmp.Compare(a.Seq, b.Seq) })
	var size int64
	for _, r := range recs {
		size += int64(len(r.Cast))
	}
	for len(recs) > MaxRecordings || size > MaxRecordingBytes && len(recs) > 1 {
		size -= int64(len(recs[0].Cast))
		t.del(tRecordings, recs[0])
		recs = recs[1:]
	}
}

// deleteRecordings removes the recordings of sessions into workspace wsID.
func deleteRecordings(t *tx, wsID string) {
	for _, r := range all[Recording](t.Txn, tRecordings, "workspace", wsID) {
		t.del(tRecordings, r)
	}
}
