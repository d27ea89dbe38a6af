package fsm

import "fmt"

// LoginFailure is the payload of login.fail: failed API logins from one source address (the
// command's Source), as the replica that refused them counted them. Replicas write one per
// address per interval, not one per attempt, so a flood of bad keys cannot flood the log.
type LoginFailure struct {
	Failures int    `json:"failures"`          // failed logins counted since the last event
	Refused  int    `json:"refused,omitempty"` // attempts refused unchecked while backing off
	Reason   string `json:"reason"`            // why the last one failed
	KeyID    string `json:"key_id,omitempty"`  // the ID of the key last tried, if it had one
	Blocked  bool   `json:"blocked,omitempty"` // the address is refused for the rest of the interval
}

const maxLoginReason = 256

func loginFail(t *tx) (any, string, error) {
	var f LoginFailure
	if err := t.decode(&f); err != nil {
		return nil, "", err
	}
	if f.Failures < 0 || f.Refused < 0 || f.Failures+f.Refused == 0 {
		return nil, "", errorf(CodeInvalid, "login.fail: no failures to record")
	}
	if err := firstErr(checkLen("a login failure's reason", f.Reason, maxLoginReason), checkLen("a key ID", f.KeyID, MaxKeyName)); err != nil {
		return nil, "", err
	}
	t.detail = fmt.Sprintf("%d failed API login(s), last: %s", f.Failures, f.Reason)
	if f.Refused > 0 {
		t.detail += fmt.Sprintf("; %d refused unchecked while backing off", f.Refused)
	}
	if f.Blocked {
		t.detail += "; backing off"
	}
	object := "apikey"
	if f.KeyID != "" {
		object += "/" + f.KeyID
	}
	return nil, object, nil
}
