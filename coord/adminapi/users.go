package adminapi

import (
	"net/http"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
)

func apiUser(u *fsm.User) api.User {
	return api.User{ID: u.ID, Name: u.Name, Role: u.Role, CreatedAt: u.CreatedAt}
}

func adminOnly(c *caller, what string) error {
	if !c.admin() {
		return forbidden("%s is for admins; %s is a member", what, c.user.Name)
	}
	return nil
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := adminOnly(c, "creating users"); err != nil {
		return err
	}
	var req api.CreateUser
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Role == "" {
		req.Role = api.RoleMember
	}
	if err := fsm.ValidName("user", req.Name); err != nil {
		return err
	}
	var u fsm.User
	if err := s.apply(r, c, "user.create", fsm.User{ID: keys.New("u").ID, Name: req.Name, Role: req.Role}, &u); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apiUser(&u))
	return nil
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.read(r)
	if err != nil {
		return err
	}
	out := []api.User{}
	for _, u := range store.Users() {
		if c.admin() || u.ID == c.user.ID {
			out = append(out, apiUser(u))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.read(r)
	if err != nil {
		return err
	}
	u := store.UserByName(r.PathValue("name"))
	if u == nil || (!c.admin() && u.ID != c.user.ID) {
		return notFound("no user %q", r.PathValue("name"))
	}
	writeJSON(w, http.StatusOK, apiUser(u))
	return nil
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := adminOnly(c, "deleting users"); err != nil {
		return err
	}
	if err := s.apply(r, c, "user.delete", fsm.ByName{Name: r.PathValue("name")}, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
