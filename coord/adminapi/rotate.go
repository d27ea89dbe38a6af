package adminapi

import (
	"fmt"
	"net/http"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
)

// rotateAPIKey replaces an API key — a member's own, any for an admin — with a new one for
// the same user, with the same name and lifetime, and revokes the old one. The new secret
// is in the answer, this once. The bootstrap admin key never expires: this is how it goes.
func (s *Server) rotateAPIKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.read(r)
	if err != nil {
		return err
	}
	old := store.APIKey(r.PathValue("id"))
	if old == nil || (!c.admin() && old.UserID != c.user.ID) {
		return notFound("no API key %q", r.PathValue("id"))
	}
	if old.RevokedAt != nil {
		return apiErr(http.StatusConflict, api.CodeConflict, "API key %s is revoked; create a new one with meshctl apikey create", old.ID)
	}
	var exp *time.Time
	if old.ExpiresAt != nil {
		t := time.Now().Add(old.ExpiresAt.Sub(old.CreatedAt)).UTC()
		exp = &t
	}
	// Not replayed by Idempotency-Key: a replay could not show the new secret again. A
	// retried rotation finds the old key revoked and says so.
	r.Header.Del("Idempotency-Key")
	k := keys.New(keys.APIKey)
	var rec fsm.APIKey
	if err := s.apply(r, c, "apikey.create", fsm.APIKey{ID: k.ID, UserID: old.UserID, Name: old.Name, Hash: k.Hash(), ExpiresAt: exp}, &rec); err != nil {
		return err
	}
	// Created first, revoked second: a failure between leaves the old key working, never
	// the user without one.
	if err := s.apply(r, c, "apikey.revoke", fsm.ByID{ID: old.ID}, nil); err != nil {
		return fmt.Errorf("rotating API key %s: the new key %s exists but the old one is not revoked (%w); revoke %s, then rotate again", old.ID, rec.ID, err, rec.ID)
	}
	writeJSON(w, http.StatusCreated, api.NewAPIKey{APIKey: apiAPIKey(&rec, userName(store, rec.UserID)), Key: k.String()})
	return nil
}
