package adminapi

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/secret"
)

// mayWatch reports whether the caller may see a recording: admins all, members their own
// sessions and those into the workspaces they owned then — by user and workspace ID, never
// by a name that another may take later. (Recordings made before IDs were kept: admins only.)
func mayWatch(c *caller, rec *fsm.Recording) bool {
	return c.admin() || rec.UserID == c.user.ID || rec.OwnerID == c.user.ID
}

func (s *Server) listRecordings(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.read(r)
	if err != nil {
		return err
	}
	var wsID string
	if name := r.URL.Query().Get("workspace"); name != "" {
		ws := store.Workspace(name)
		if ws == nil {
			return notFound("no workspace %q (see meshctl ws list)", name)
		}
		wsID = ws.ID
	}
	out := []api.Recording{}
	for _, rec := range store.Recordings(wsID) {
		if mayWatch(c, rec) {
			out = append(out, api.Recording{ID: rec.ID, Workspace: rec.Workspace, User: rec.User, Node: rec.Node,
				From: rec.From, Login: rec.Login, Start: rec.Start, Duration: rec.Duration.Seconds(), Size: rec.CastSize,
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
	if rec == nil || !mayWatch(c, rec) {
		return notFound("no recording %q (see meshctl ssh recordings)", r.PathValue("id"))
	}
	cast := rec.Cast
	if rec.WorkspaceID != "" { // sealed since recordings were kept by workspace ID
		if s.Secrets == nil {
			return apiErr(http.StatusServiceUnavailable, api.CodeUnavailable, "coord has no secret key to open recordings: start every replica with the same --secret-key-file FILE")
		}
		if cast, err = s.Secrets.Open(rec.Cast, []byte(secret.RecordingAAD(rec.ID))); err != nil {
			return err
		}
	}
	zr, err := gzip.NewReader(bytes.NewReader(cast))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-asciicast")
	_, err = io.Copy(w, zr)
	return err
}
