package fsm

import (
	"strings"
	"testing"
)

// TestLoginFail: login.fail writes an audit event with its counts and nothing else; an
// empty or oversized one is refused.
func TestLoginFail(t *testing.T) {
	h := newHarness(t)
	h.seed()
	before := len(h.f.Store().Audit(0, -1))
	h.ok("login.fail", LoginFailure{Failures: 9, Refused: 3, Reason: "unknown API key", KeyID: "abc", Blocked: true})
	ev := h.f.Store().Audit(0, -1)
	last := ev[len(ev)-1]
	if len(ev) != before+1 || last.Action != "login.fail" || last.Object != "apikey/abc" || last.Source != "127.0.0.1" ||
		last.Detail != "9 failed API login(s), last: unknown API key; 3 refused unchecked while backing off; backing off" {
		t.Errorf("audit event %+v", last)
	}
	for _, bad := range []LoginFailure{{}, {Failures: -1, Refused: 2}, {Failures: 1, Reason: strings.Repeat("r", 300)}, {Failures: 1, KeyID: strings.Repeat("k", 100)}} {
		if res := h.apply("login.fail", bad); res.Err == nil || res.Err.Code != CodeInvalid {
			t.Errorf("login.fail %+v = %v; want invalid", bad, res.Err)
		}
	}
}
