package fsm

import "testing"

// TestIdemKeyScopes: an entry is found by its scope; the same scope with another body is
// refused with CodeKeyReused and writes nothing; another scope is a new request.
func TestIdemKeyScopes(t *testing.T) {
	h := newHarness(t)
	h.seed()
	send := func(idem string, u User) *Result {
		l := h.entry("user.create", u)
		c, _ := decodeCommand(l.Data)
		c.IdemKey = idem
		l.Data = must2(c.Encode())
		return h.f.Apply(l).(*Result)
	}
	first := send(IdemKey("scope-a", "body-1"), User{ID: "u7", Name: "carol", Role: RoleMember})
	if first.Err != nil {
		t.Fatal(first.Err)
	}
	if res := send(IdemKey("scope-a", "body-1"), User{ID: "u8", Name: "carol2", Role: RoleMember}); res.Err != nil || res.Index != first.Index {
		t.Errorf("retry: %+v; want the first answer (index %d)", res, first.Index)
	}
	res := send(IdemKey("scope-a", "body-2"), User{ID: "u9", Name: "dave", Role: RoleMember})
	if res.Err == nil || res.Err.Code != CodeKeyReused || h.f.Store().UserByName("dave") != nil {
		t.Errorf("another body: %+v, dave created: %v; want key_reused and no write", res.Err, h.f.Store().UserByName("dave") != nil)
	}
	if res := send(IdemKey("scope-b", "body-1"), User{ID: "u9", Name: "dave", Role: RoleMember}); res.Err != nil || h.f.Store().UserByName("dave") == nil {
		t.Errorf("another scope: %v; want dave created", res.Err)
	}
}
