package adminapi

import (
	"net/http"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
)

// expiry parses a Go duration into an expiry time; "" is def (0: never).
func expiry(s string, def time.Duration) (*time.Time, error) {
	d := def
	if s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			return nil, invalid("expiry %q: want a positive Go duration such as 24h or 90m", s)
		}
	}
	if d == 0 {
		return nil, nil
	}
	t := time.Now().Add(d).UTC()
	return &t, nil
}

// owner resolves the user a request acts for: the caller, or (admins only) a named user.
func (s *Server) owner(r *http.Request, c *caller, name string) (*fsm.User, error) {
	if name == "" || name == c.user.Name {
		return c.user, nil
	}
	if !c.admin() {
		return nil, forbidden("only admins act for another user (%q)", name)
	}
	store, err := s.read(r)
	if err != nil {
		return nil, err
	}
	u := store.UserByName(name)
	if u == nil {
		return nil, notFound("no user %q", name)
	}
	return u, nil
}

func (s *Server) createAPIKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.CreateAPIKey
	if err := decode(w, r, &req); err != nil {
		return err
	}
	u, err := s.owner(r, c, req.User)
	if err != nil {
		return err
	}
	exp, err := expiry(req.Expiry, 0)
	if err != nil {
		return err
	}
	k, err := s.newKey(c, keys.APIKey)
	if err != nil {
		return err
	}
	var rec fsm.APIKey
	if err := s.apply(r, c, "apikey.create", fsm.APIKey{ID: k.ID, UserID: u.ID, Name: req.Name, Hash: k.Hash(), ExpiresAt: exp}, &rec); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, api.NewAPIKey{APIKey: apiAPIKey(&rec, u.Name), Key: k.String()})
	return nil
}

func apiAPIKey(k *fsm.APIKey, user string) api.APIKey {
	return api.APIKey{ID: k.ID, User: user, Name: k.Name, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt}
}

func (s *Server) listAPIKeys(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.read(r)
	if err != nil {
		return err
	}
	out := []api.APIKey{}
	for _, k := range store.APIKeys(visible(c)) {
		out = append(out, apiAPIKey(k, userName(store, k.UserID)))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// visible is the owner filter for listings: everyone's for admins, one's own for members.
func visible(c *caller) string {
	if c.admin() {
		return ""
	}
	return c.user.ID
}

func userName(store *fsm.Store, id string) string {
	if u := store.User(id); u != nil {
		return u.Name
	}
	return id
}

func (s *Server) revokeAPIKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.read(r)
	if err != nil {
		return err
	}
	k := store.APIKey(r.PathValue("id"))
	if k == nil || (!c.admin() && k.UserID != c.user.ID) {
		return notFound("no API key %q", r.PathValue("id"))
	}
	if err := s.apply(r, c, "apikey.revoke", fsm.ByID{ID: k.ID}, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) createAuthKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.CreateAuthKey
	if err := decode(w, r, &req); err != nil {
		return err
	}
	exp, err := expiry(req.Expiry, 24*time.Hour)
	if err != nil {
		return err
	}
	k, err := s.newKey(c, keys.AuthKey)
	if err != nil {
		return err
	}
	rec := fsm.AuthKey{ID: k.ID, UserID: c.user.ID, Hash: k.Hash(), Reusable: req.Reusable,
		Ephemeral: req.Ephemeral, Tags: req.Tags, ExpiresAt: exp}
	if err := s.apply(r, c, "authkey.create", rec, &rec); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, api.NewAuthKey{AuthKey: apiAuthKey(&rec, c.user.Name), Key: k.String()})
	return nil
}

func apiAuthKey(k *fsm.AuthKey, user string) api.AuthKey {
	return api.AuthKey{ID: k.ID, User: user, Reusable: k.Reusable, Ephemeral: k.Ephemeral, Tags: k.Tags,
		Uses: k.Uses, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt}
}

func (s *Server) listAuthKeys(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.read(r)
	if err != nil {
		return err
	}
	out := []api.AuthKey{}
	for _, k := range store.AuthKeys(visible(c)) {
		out = append(out, apiAuthKey(k, userName(store, k.UserID)))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) revokeAuthKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.read(r)
	if err != nil {
		return err
	}
	k := store.AuthKey(r.PathValue("id"))
	if k == nil || (!c.admin() && k.UserID != c.user.ID) {
		return notFound("no auth key %q", r.PathValue("id"))
	}
	if err := s.apply(r, c, "authkey.revoke", fsm.ByID{ID: k.ID}, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
