package control

import (
	"bytes"
	"crypto/rand"
	"testing"

	"meshwork.dev/coord/secret"
)

// TestRecordingsSealed: a session's recording enters the Raft log encrypted, bound to its
// session; without a key it is not kept at all.
func TestRecordingsSealed(t *testing.T) {
	var k secret.Key
	rand.Read(k[:])
	cast := []byte("\x1f\x8b gzip of what was typed")
	sealed := (&Server{Secrets: &k}).seal("s1", cast)
	if bytes.Contains(sealed, cast[2:]) || len(sealed) <= len(cast) {
		t.Fatalf("sealed recording %q holds the cast in clear", sealed)
	}
	if got, err := k.Open(sealed, []byte(secret.RecordingAAD("s1"))); err != nil || !bytes.Equal(got, cast) {
		t.Errorf("open: %q, %v", got, err)
	}
	if _, err := k.Open(sealed, []byte(secret.RecordingAAD("s2"))); err == nil {
		t.Errorf("a recording opened as another session's")
	}
	if got := (&Server{}).seal("s1", cast); got != nil {
		t.Errorf("without a key: kept %q; want nothing", got)
	}
}
