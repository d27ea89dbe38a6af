package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"meshwork.dev/coord/api"
)

// WorkspaceAPISocket is the file name, in the directory a workspace sees at
// ctrd.SocketsPath (/run/meshwork), of the workspace's own API: meshctl inside the
// workspace finds it there and needs no key.
const WorkspaceAPISocket = "api.sock"

// maxWorkspaceRequest bounds a request body relayed from a workspace.
const maxWorkspaceRequest = 1 << 20

// wsAPIs serves each running workspace's own API on a Unix socket in its socket directory.
// Every request is relayed to coord over the machine's Noise channel; coord checks that
// this machine hosts the workspace and answers as its owner, with that user's rights.
type wsAPIs struct {
	mu      sync.Mutex
	servers map[string]*http.Server // by workspace name
}

// up serves workspace name's API in dir unless it is served already.
func (s *wsAPIs) up(name, dir string, relay func(w http.ResponseWriter, r *http.Request, name string)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.servers[name] != nil {
		return nil
	}
	path := filepath.Join(dir, WorkspaceAPISocket)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("workspace %s's API: %w", name, err)
	}
	// The workspace's processes run as its user: any of them may ask, as they may ssh out.
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxWorkspaceRequest)
		relay(w, r, name)
	})}
	if s.servers == nil {
		s.servers = map[string]*http.Server{}
	}
	s.servers[name] = srv
	go srv.Serve(ln)
	return nil
}

// down stops serving workspace name's API.
func (s *wsAPIs) down(name string) {
	s.mu.Lock()
	srv := s.servers[name]
	delete(s.servers, name)
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// closeAll stops every workspace's API (the agent is stopping; a new agent serves them again).
func (s *wsAPIs) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, srv := range s.servers {
		srv.Close()
		delete(s.servers, name)
	}
}

// relayWorkspace sends a request of workspace name's API to coord and copies the answer back.
func (c *coordClient) relayWorkspace(w http.ResponseWriter, r *http.Request, name string) {
	u := "https://" + hostOf(c.base) + "/machine/meshwork/workspace/" + url.PathEscape(name) + r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, u, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
	res, err := c.nc.Do(req)
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(map[string]*api.Error{"error": {Code: api.CodeUnavailable,
			Message: fmt.Sprintf("coord cannot be reached from this workspace's machine: %v; what runs keeps running", err)}})
		return
	}
	defer res.Body.Close()
	w.Header().Set("Content-Type", res.Header.Get("Content-Type"))
	w.WriteHeader(res.StatusCode)
	io.Copy(w, res.Body)
}

// serveWorkspaceAPI serves running workspace name's own API, when the agent talks to a coord.
func (a *agent) serveWorkspaceAPI(rt Runtime, name string) {
	if a.coord == nil {
		return
	}
	if err := a.wsAPI.up(name, rt.SocketDir(name), a.coord.relayWorkspace); err != nil {
		a.logf("agent: %s: %v", name, err)
	}
}
