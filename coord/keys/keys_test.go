package keys

import "testing"

func TestRoundTrip(t *testing.T) {
	k := New(APIKey)
	got, err := Parse(k.String(), APIKey)
	if err != nil || got != k {
		t.Fatalf("Parse(%q) = %v, %v; want %v", k, got, err, k)
	}
	if !got.Matches(k.Hash()) {
		t.Errorf("key does not match its own hash")
	}
	other := New(APIKey)
	if other.Matches(k.Hash()) {
		t.Errorf("a different key matches")
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{"", "mk", "mk__x", "mk_id_", "ak_id_secret", "mk_a_b_c", "Bearer mk_a_b"} {
		if _, err := Parse(s, APIKey); err == nil {
			t.Errorf("Parse(%q) succeeded; want ErrMalformed", s)
		}
	}
}

func TestToken(t *testing.T) {
	a, b := []byte("ca key one"), []byte("ca key two")
	if !CheckToken(a, Token(a)) {
		t.Errorf("token of a does not check against a")
	}
	if CheckToken(b, Token(a)) || CheckToken(a, "mj_") {
		t.Errorf("a wrong token checks")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("mk_abc_def")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := Parse(s, APIKey)
		if err == nil && k.String() != s {
			t.Errorf("Parse(%q) = %q", s, k.String())
		}
	})
}
