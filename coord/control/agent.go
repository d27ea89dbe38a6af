package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"tailscale.com/types/key"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/secret"
	"meshwork.dev/policy"
)

// stateWait bounds one long poll of a machine's state.
const stateWait = 30 * time.Second

// machine finds the node behind a Noise channel's machine key, or answers 403.
func (s *Server) machine(w http.ResponseWriter, r *http.Request, mk key.MachinePublic) (*fsm.Store, *fsm.Node) {
	store, err := s.Backend.Read(r.Context(), "")
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return nil, nil
	}
	n := store.NodeByMachine(mk.String())
	if n == nil {
		http.Error(w, "machine not registered: join the mesh first", http.StatusForbidden)
		return nil, nil
	}
	return store, n
}

// stateTables are the tables a machine's state is made from.
var stateTables = []string{fsm.TableWorkspaces, fsm.TableUsers, fsm.TablePolicy, fsm.TableEnvironments, fsm.TableNodes, fsm.TableExits}

// serveMachineState answers a machine's agent with the workspaces, environments and
// intercepts wanted on it (an intercept's start and stop touch its service's machine, so
// the nodes table wakes the poll). Given the digest of what the agent has, it waits (a long poll) until that changes:
// status reports, other machines' workspaces and the like wake it but send nothing.
func (s *Server) serveMachineState(w http.ResponseWriter, r *http.Request, mk key.MachinePublic) {
	store, n := s.machine(w, r, mk)
	if n == nil {
		return
	}
	q := r.URL.Query()
	have := q.Get("digest")
	index, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	ctx, cancel := context.WithTimeout(r.Context(), stateWait)
	defer cancel()
	st, err := s.machineState(store, n.Name)
	for err == nil && have != "" && st.Digest == have && ctx.Err() == nil {
		index = max(index, st.Index)
		store.WaitIndex(ctx, index, stateTables...)
		if store, err = s.Backend.Read(r.Context(), ""); err == nil {
			st, err = s.machineState(store, n.Name)
		}
	}
	if err != nil {
		// The agent keeps what it runs until coord can say what it wants again.
		s.logf("control: state for %s: %v", n.Name, err)
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if r.Context().Err() != nil {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(st)
}

// machineState is what the machine called name should run, with its digest (of all but
// Index).
func (s *Server) machineState(store *fsm.Store, name string) (*api.MachineState, error) {
	st := &api.MachineState{Machine: name, Domain: s.domain(), Admins: []string{}, Workspaces: []api.WorkspaceSpec{}}
	for _, t := range stateTables {
		st.Index = max(st.Index, store.TableIndex(t))
	}
	for _, u := range store.Users() {
		if u.Role == fsm.RoleAdmin {
			st.Admins = append(st.Admins, u.Name)
		}
	}
	pol := s.sshPolicy(store)
	for _, ws := range store.WorkspacesOn(name) {
		spec := api.WorkspaceSpec{ID: ws.ID, Name: ws.Name, Image: ws.Image, IPv4: ws.IPv4, IPv6: ws.IPv6,
			CPU: ws.CPU, Memory: ws.MemoryBytes, Desired: ws.Desired, Env: ws.Env}
		if pol != nil {
			for _, g := range pol.SSHGrants(ws.Name) {
				spec.SSH = append(spec.SSH, api.SSHGrant(g))
			}
		}
		if u := store.User(ws.OwnerID); u != nil {
			spec.User = u.Name
		}
		if ws.Exit != "" {
			x, err := s.exitSpec(store, ws.Exit)
			if err != nil {
				return nil, err
			}
			spec.Exit = x
		}
		st.Workspaces = append(st.Workspaces, spec)
	}
	var err error
	if st.Environments, err = s.environmentSpecs(store, name); err != nil {
		return nil, err
	}
	st.Intercepts = interceptSpecs(store, name)
	digested := *st
	digested.Index = 0
	b, err := json.Marshal(digested)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	st.Digest = hex.EncodeToString(sum[:12])
	return st, nil
}

// sshPolicy is the policy whose ssh rules grant logins, or nil (none set, or one that does
// not parse: it was checked when set, and grants nothing then).
func (s *Server) sshPolicy(store *fsm.Store) *policy.Policy {
	pol := store.Policy()
	if pol.Text == "" {
		return nil
	}
	p, err := policy.Parse([]byte(pol.Text))
	if err != nil {
		s.logf("control: policy version %d: %v; its ssh rules grant nothing", pol.Version, err)
		return nil
	}
	return p
}

// serveMachineReport records what a machine's agent observes of its workspaces and
// environment services. A machine reports only on its own; states it already reported are
// not written again.
func (s *Server) serveMachineReport(w http.ResponseWriter, r *http.Request, mk key.MachinePublic) {
	store, n := s.machine(w, r, mk)
	if n == nil {
		return
	}
	var rep api.MachineReport
	if err := decode(r, &rep); err != nil {
		http.Error(w, "bad report: "+err.Error(), http.StatusBadRequest)
		return
	}
	for _, ws := range rep.Workspaces {
		if old := store.Workspace(ws.Name); old != nil && old.State == ws.State && old.Reason == ws.Reason &&
			(ws.HostKey == "" || ws.HostKey == old.HostKey) {
			continue
		}
		err := s.apply(r.Context(), "workspace.status", "node:"+n.Name, "", fsm.WorkspaceStatus{
			Name: ws.Name, Machine: n.Name, State: ws.State, Reason: ws.Reason, HostKey: ws.HostKey})
		if err != nil {
			// A workspace deleted meanwhile, or not this machine's: the rest still counts.
			s.logf("control: report from %s on %s: %v", n.Name, ws.Name, err)
		}
	}
	s.recordServices(r.Context(), store, n, rep.Services)
	s.recordIntercepts(r.Context(), store, n, rep.Intercepts)
	w.WriteHeader(http.StatusNoContent)
}

// seal encrypts a session's recording for the Raft log; without a key it is dropped.
func (s *Server) seal(sessionID string, cast []byte) []byte {
	switch {
	case len(cast) == 0:
		return nil
	case s.Secrets == nil:
		s.logf("control: session %s: recording dropped: coord has no --secret-key-file to encrypt it at rest", sessionID)
		return nil
	case len(cast) > fsm.MaxCast:
		return cast // refused as too big by the FSM, with its reason
	}
	return s.Secrets.Seal(cast, []byte(secret.RecordingAAD(sessionID)))
}

// serveSession records an SSH session a machine served: audit events at its start and end,
// and the recording of a PTY session. The machine is the one the Noise channel proves.
func (s *Server) serveSession(w http.ResponseWriter, r *http.Request, mk key.MachinePublic) {
	_, n := s.machine(w, r, mk)
	if n == nil {
		return
	}
	var rep api.SessionReport
	if err := json.NewDecoder(io.LimitReader(r.Body, 2*fsm.MaxCast)).Decode(&rep); err != nil {
		http.Error(w, "bad session report: "+err.Error(), http.StatusBadRequest)
		return
	}
	sess := fsm.Session{ID: rep.ID, Workspace: rep.Workspace, Machine: n.Name, User: rep.User, Node: rep.Node,
		From: rep.From, Login: rep.Login, Command: rep.Command, PTY: rep.PTY, Start: rep.Start,
		Duration: rep.Duration, BytesIn: rep.BytesIn, BytesOut: rep.BytesOut, ExitCode: rep.ExitCode}
	var payload any = sess
	op := "ssh.start"
	actor := rep.User
	switch rep.Kind {
	case "end":
		op, payload = "ssh.end", fsm.SessionEnd{Session: sess, Cast: s.seal(rep.ID, rep.Cast), CastSize: rep.CastSize, Truncated: rep.Truncated}
	case "blocked":
		op, actor = "ssh.block", "node:"+n.Name
	}
	if err := s.apply(r.Context(), op, actor, rep.From, payload); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
