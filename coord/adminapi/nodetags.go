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
	store, n, err := s.ownNode(r, c)
	if err != nil {
		return err
	}
	var out fsm.Node
	if err := s.apply(r, c, "node.tag", fsm.NodeTags{Name: n.Name, UserID: c.user.ID, Tags: req.Tags}, &out); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiNode(store, &out))
	return nil
}
