package adminapi

import (
	"net/http"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
)

// tagNode sets a machine's tags: admins on any machine, members on their own and only with
// tags the policy's tagOwners give them (checked in the FSM, against the policy of the moment).
func (s *Server) tagNode(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.SetTags
	if err := decode(w, r, &req); err != nil {
		return err
	}
	store, err := s.read(r)
	if err != nil {
		return err
	}
	n := store.Node(r.PathValue("name"))
	if n == nil || (!c.admin() && n.UserID != c.user.ID) {
		return notFound("no node %q", r.PathValue("name"))
	}
	var out fsm.Node
	if err := s.apply(r, c, "node.tag", fsm.NodeTags{Name: n.Name, UserID: c.user.ID, Tags: req.Tags}, &out); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiNode(store, &out))
	return nil
}
