package adminapi

import (
	"context"
	"net/http"
	"sync"
	"time"

	"meshwork.dev/coord/api"
)

// workspaceRoutes are the admin API routes a workspace's own API serves: the node relays
// them from the socket processes in the workspace see at /run/meshwork/api.sock, and coord
// answers them as the workspace's owner, with that user's rights and no more. Reads (what
// `meshctl status` and `meshctl env status` show inside a workspace), and intercepts that
// send traffic to this workspace, and no other: `meshctl intercept start ENV/SVC:PORT --to :PORT`.
var workspaceRoutes = []string{
	"GET /v1/workspaces",
	"GET /v1/workspaces/{name}",
	"GET /v1/environments",
	"GET /v1/environments/{name}",
	"POST /v1/intercepts",
	"GET /v1/intercepts",
	"GET /v1/intercepts/{id}",
	"DELETE /v1/intercepts/{id}",
}

// workspaceMux is the handler of workspaces' own API, made once.
type workspaceMux struct {
	once sync.Once
	h    http.Handler
}

type workspaceKey struct{}

// ServeWorkspace answers a request of workspace name's own API. The caller (the control
// server, for a machine it knows hosts the workspace) vouches for the name; coord takes the
// workspace's owner as the caller.
func (s *Server) ServeWorkspace(w http.ResponseWriter, r *http.Request, name string) {
	s.wsMux.once.Do(func() {
		mux := http.NewServeMux()
		routes := s.routes()
		for _, p := range workspaceRoutes {
			mux.Handle(p, s.asOwner(p, routes[p]))
		}
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, apiErr(http.StatusForbidden, api.CodeForbidden,
				"%s %s is not served inside a workspace; use an API key from outside (meshctl --coord URL --token KEY)", r.Method, r.URL.Path))
		})
		s.wsMux.h = mux
	})
	s.wsMux.h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), workspaceKey{}, name)))
}

// asOwner runs h as the owner of the request's workspace.
func (s *Server) asOwner(route string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		c, err := s.workspaceOwner(r)
		if err == nil {
			err = h(w, r, c)
		}
		if err != nil {
			writeError(w, s.apiError(err))
		}
		s.observe(route, time.Since(start), err)
	})
}

func (s *Server) workspaceOwner(r *http.Request) (*caller, error) {
	name, _ := r.Context().Value(workspaceKey{}).(string)
	store, err := s.Backend.Read(r.Context(), api.Default)
	if err != nil {
		return nil, err
	}
	ws := store.Workspace(name)
	if ws == nil {
		return nil, notFound("no workspace %q: it was deleted", name)
	}
	u := store.User(ws.OwnerID)
	if u == nil {
		return nil, apiErr(http.StatusUnauthorized, api.CodeUnauthorized, "workspace %s's owner is gone", name)
	}
	return &caller{user: u, addr: "workspace:" + name}, nil
}
