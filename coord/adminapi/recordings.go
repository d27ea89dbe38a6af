package adminapi

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
)

// mayWatch reports whether the caller may see a recording: admins all, members their own
// sessions and those into their workspaces.
func mayWatch(store *fsm.Store, c *caller, rec *fsm.Recording) bool {
	if c.admin() || rec.User == c.user.Name {
		return true
	}
	ws := store.Workspace(rec.Workspace)
	return ws != nil && ws.OwnerID == c.user.ID
}

func (s *Server) listRecordings(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.read(r)
	if err != nil {
		return err
	}
	out := []api.Recording{}
	for _, rec := range store.Recordings(r.URL.Query().Get("workspace")) {
		if mayWatch(store, c, rec) {
			out = append(out, api.Recording{ID: rec.ID, Workspace: rec.Workspace, User: rec.User, Node: rec.Node,
				From: rec.From, Login: rec.Login, Start: rec.Start, Duration: rec.Duration, Size: rec.CastSize,
				Truncated: rec.Truncated})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getRecording answers with the session's asciicast v2 text.
func (s *Server) getRecording(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.read(r)
	if err != nil {
		return err
	}
	rec := store.Recording(r.PathValue("id"))
	if rec == nil || !mayWatch(store, c, rec) {
		return notFound("no recording %q (see meshctl ssh recordings)", r.PathValue("id"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(rec.Cast))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-asciicast")
	_, err = io.Copy(w, zr)
	return err
}
