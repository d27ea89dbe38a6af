package fsm

import (
	"fmt"
	"time"
)

// Session is an SSH session into a workspace, as the agent that served it reports it.
type Session struct {
	ID        string        `json:"id"`
	Workspace string        `json:"workspace"`
	Machine   string        `json:"machine"` // the reporting machine (set by coord from its key)
	User      string        `json:"user"`    // who, by mesh identity
	Node      string        `json:"node"`    // from which machine
	From      string        `json:"from"`    // source address
	Login     string        `json:"login"`   // as whom inside the workspace
	Command   string        `json:"command,omitempty"`
	PTY       bool          `json:"pty,omitempty"`
	Start     time.Time     `json:"start"`
	Duration  time.Duration `json:"duration,omitempty"`
	BytesIn   int64         `json:"bytes_in,omitempty"`
	BytesOut  int64         `json:"bytes_out,omitempty"`
	ExitCode  int           `json:"exit_code,omitempty"`
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

// Bounds on recordings: each compressed cast, and how many are kept (the oldest go first).
const (
	MaxCast       = 1 << 20
	MaxRecordings = 1000
)

func sshStart(t *tx) (any, string, error) {
	var s Session
	if err := t.decode(&s); err != nil {
		return nil, "", err
	}
	if err := checkSession(t, &s); err != nil {
		return nil, "", err
	}
	t.detail = fmt.Sprintf("session %s: %s from %s (%s) as %s%s", s.ID, s.User, s.Node, s.From, s.Login, commandNote(s.Command))
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
		e.ID, e.User, e.Node, e.Login, e.Duration.Round(time.Millisecond), e.BytesIn, e.BytesOut, e.ExitCode)
	if len(e.Cast) > 0 {
		if get[Recording](t, tRecordings, "id", e.ID) != nil {
			return nil, "", errorf(CodeConflict, "session %s already has a recording", e.ID)
		}
		t.add(tRecordings, &Recording{Session: e.Session, Seq: t.index, Cast: e.Cast, CastSize: e.CastSize, Truncated: e.Truncated})
		pruneRecordings(t)
	}
	return nil, "workspace/" + e.Workspace, nil
}

func checkSession(t *tx, s *Session) error {
	if s.ID == "" || s.Workspace == "" {
		return errorf(CodeInvalid, "a session needs an ID and a workspace")
	}
	w := get[Workspace](t, tWorkspaces, "name", s.Workspace)
	if w == nil {
		return errorf(CodeNotFound, "no workspace %q", s.Workspace)
	}
	if w.Machine != s.Machine {
		return errorf(CodeConflict, "workspace %q is on machine %q, not %q", s.Workspace, w.Machine, s.Machine)
	}
	return nil
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

// pruneRecordings drops the oldest recordings past MaxRecordings.
func pruneRecordings(t *tx) {
	it, err := t.Get(tRecordings, "seq")
	if err != nil {
		return
	}
	var all []any
	for v := it.Next(); v != nil; v = it.Next() {
		all = append(all, v)
	}
	for _, v := range all[:max(len(all)-MaxRecordings, 0)] {
		t.del(tRecordings, v)
	}
}
