package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"meshwork.dev/coord/api"
)

// MachinePort is where a workmachine's agent serves its machine API (workspace logs) on its
// mesh address. Callers are known by their mesh identity: no keys.
const MachinePort = 7070

// maxTail bounds how much of a log one request reads back.
const maxTail = 4 << 20

// current is the last state coord sent, or nil.
func (a *agent) current() *api.MachineState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

// machineAPI serves the machine API; who names the caller of a request.
func (a *agent) machineAPI(rt Runtime, who func(r *http.Request) (string, error)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/workspaces/{name}/logs", func(w http.ResponseWriter, r *http.Request) {
		spec, err := a.authorize(r, who)
		if err != nil {
			var he *httpErr
			errors.As(err, &he)
			http.Error(w, err.Error(), he.status)
			return
		}
		a.serveLogs(w, r, rt.LogPath(spec.Name))
	})
	mux.HandleFunc("GET /v1/environments/{env}/services/{svc}/logs", func(w http.ResponseWriter, r *http.Request) {
		id, err := a.authorizeService(r, who)
		svc, ok := rt.(Services)
		if err == nil && !ok {
			err = &httpErr{http.StatusNotFound, "this machine runs no environment services"}
		}
		if err != nil {
			var he *httpErr
			errors.As(err, &he)
			http.Error(w, err.Error(), he.status)
			return
		}
		a.serveLogs(w, r, svc.ServiceLogPath(id))
	})
	mux.HandleFunc("GET /v1/shield", func(w http.ResponseWriter, r *http.Request) {
		if !a.adminCall(w, r, who) {
			return
		}
		out := []api.ShieldBlock{}
		if a.ssh != nil {
			for _, b := range a.ssh.srv.Blocked() {
				out = append(out, api.ShieldBlock{Addr: b.Addr.String(), Until: b.Until, Failures: b.Failures})
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /v1/shield/unblock", func(w http.ResponseWriter, r *http.Request) {
		if !a.adminCall(w, r, who) {
			return
		}
		addr, err := netip.ParseAddr(r.URL.Query().Get("addr"))
		if err != nil || a.ssh == nil {
			http.Error(w, "unblock what? give ?addr=IP of a blocked address (meshctl node shield list)", http.StatusBadRequest)
			return
		}
		if err := a.ssh.srv.Unblock(addr); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// adminCall answers 401/403 unless an admin is calling.
func (a *agent) adminCall(w http.ResponseWriter, r *http.Request, who func(r *http.Request) (string, error)) bool {
	user, err := who(r)
	if err != nil {
		http.Error(w, "who are you? "+err.Error(), http.StatusUnauthorized)
		return false
	}
	if st := a.current(); st == nil || !slices.Contains(st.Admins, user) {
		http.Error(w, user+" is not an admin: the shield is for admins", http.StatusForbidden)
		return false
	}
	return true
}

type httpErr struct {
	status int
	msg    string
}

func (e *httpErr) Error() string { return e.msg }

// authorize finds the workspace a request names, if its caller owns it or is an admin.
func (a *agent) authorize(r *http.Request, who func(r *http.Request) (string, error)) (*api.WorkspaceSpec, error) {
	user, err := who(r)
	if err != nil {
		return nil, &httpErr{http.StatusUnauthorized, "who are you? " + err.Error()}
	}
	name := r.PathValue("name")
	st := a.current()
	spec := findWorkspace(st, name)
	if spec == nil || (spec.User != user && !slices.Contains(st.Admins, user)) {
		return nil, &httpErr{http.StatusNotFound, fmt.Sprintf("no workspace %q of yours (%s) on this machine", name, user)}
	}
	return spec, nil
}

// authorizeService finds the service a request names, if its caller owns its environment
// or is an admin, and returns the runtime's ID of it.
func (a *agent) authorizeService(r *http.Request, who func(r *http.Request) (string, error)) (string, error) {
	user, err := who(r)
	if err != nil {
		return "", &httpErr{http.StatusUnauthorized, "who are you? " + err.Error()}
	}
	name, svc := r.PathValue("env"), r.PathValue("svc")
	st := a.current()
	var env *api.EnvironmentSpec
	if st != nil {
		if i := slices.IndexFunc(st.Environments, func(e api.EnvironmentSpec) bool { return e.Name == name }); i >= 0 {
			env = &st.Environments[i]
		}
	}
	switch {
	case env == nil:
		return "", &httpErr{http.StatusNotFound, fmt.Sprintf("no environment %q on this machine", name)}
	case env.User != user && !slices.Contains(st.Admins, user):
		return "", &httpErr{http.StatusForbidden, fmt.Sprintf("%s may not read the logs of environment %q: only its owner and admins may", user, name)}
	case !slices.ContainsFunc(env.Services, func(s api.ServiceAddr) bool { return s.Name == svc }):
		return "", &httpErr{http.StatusNotFound, fmt.Sprintf("environment %q has no service %q (meshctl env status %s lists them)", name, svc, name)}
	}
	return serviceID(env.ID, svc), nil
}

// serveLogs writes the log's last ?tail= lines (all, up to 4 MiB, by default) and with
// ?follow=1 what is written to it after, until the caller goes.
func (a *agent) serveLogs(w http.ResponseWriter, r *http.Request, path string) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		w.WriteHeader(http.StatusOK) // nothing written yet
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	tail, _ := strconv.Atoi(r.URL.Query().Get("tail"))
	if err := writeTail(w, f, tail); err != nil {
		return
	}
	if r.URL.Query().Get("follow") == "" {
		return
	}
	for {
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := io.Copy(w, f); err != nil {
			return
		}
	}
}

// writeTail copies the end of f, its last n lines when n > 0, leaving f at its end.
func writeTail(w io.Writer, f *os.File, n int) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	off := max(fi.Size()-maxTail, 0)
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	if n > 0 {
		b = lastLines(b, n)
	}
	_, err = w.Write(b)
	return err
}

func lastLines(b []byte, n int) []byte {
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			if n--; n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}

// serveMachine listens on the machine's mesh IPv4 address (on its TUN) and serves the
// machine API until ctx ends.
func (a *agent) serveMachine(ctx context.Context, rt Runtime) error {
	st, err := a.node.Status(ctx)
	if err != nil {
		return err
	}
	if len(st.TailscaleIPs) == 0 {
		return errors.New("machine API: the node has no mesh address")
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(st.TailscaleIPs[0].String(), strconv.Itoa(MachinePort)))
	if err != nil {
		return fmt.Errorf("machine API: %w", err)
	}
	who := func(r *http.Request) (string, error) {
		user, _, err := a.node.WhoIs(r.Context(), r.RemoteAddr)
		return user, err
	}
	srv := &http.Server{Handler: a.machineAPI(rt, who), ReadHeaderTimeout: 10 * time.Second}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		<-ctx.Done()
		srv.Close()
	}()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.logf("agent: machine API: %v", err)
		}
	}()
	return nil
}
