package control

import (
	"encoding/json"
	"errors"
	"hash/fnv"
	"net/http"
	"time"

	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
)

// serveRegister handles /machine/register: a new machine with an auth key, a known machine
// rotating its node key, or a logout.
func (s *Server) serveRegister(w http.ResponseWriter, r *http.Request, mk key.MachinePublic) {
	var req tailcfg.RegisterRequest
	if err := decode(r, &req); err != nil {
		http.Error(w, "bad register request: "+err.Error(), http.StatusBadRequest)
		return
	}
	resp, err := s.register(r, mk, &req)
	if err != nil {
		resp = &tailcfg.RegisterResponse{Error: err.Error()}
		s.logf("control: register %s: %v", mk.ShortString(), err)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

func (s *Server) register(r *http.Request, mk key.MachinePublic, req *tailcfg.RegisterRequest) (*tailcfg.RegisterResponse, error) {
	store, err := s.Backend.Read(r.Context(), "")
	if err != nil {
		return nil, err
	}
	known := store.NodeByMachine(mk.String())
	if !req.Expiry.IsZero() && req.Expiry.Before(time.Now()) {
		return s.logout(r, known)
	}
	j := fsm.Join{ID: keys.New("n").ID, MachineKey: mk.String(), NodeKey: req.NodeKey.String()}
	if req.Hostinfo != nil {
		j.Hostname, j.OS = truncate(req.Hostinfo.Hostname, fsm.MaxHostname), truncate(req.Hostinfo.OS, fsm.MaxOS)
	}
	if req.Auth != nil && req.Auth.AuthKey != "" {
		j.AuthKeyID, err = checkAuthKey(store, req.Auth.AuthKey)
		if err != nil {
			// A key made a moment ago through another replica may not have reached this
			// one's state yet: look again at the committed state before refusing.
			if latest, lerr := s.Backend.Read(r.Context(), api.Linearizable); lerr == nil {
				store = latest
				j.AuthKeyID, err = checkAuthKey(store, req.Auth.AuthKey)
			}
		}
		if err != nil {
			return nil, err
		}
	} else if known == nil {
		return nil, errors.New("this machine is not on the mesh yet: join with an auth key (meshctl authkey create)")
	}
	c, err := fsm.NewCommand("node.join", "node:"+mk.ShortString(), r.RemoteAddr, j)
	if err != nil {
		return nil, err
	}
	res, err := s.Backend.Apply(r.Context(), c)
	if err != nil {
		return nil, err
	}
	var n fsm.Node
	if err := res.Decode(&n); err != nil {
		return nil, err
	}
	u := store.User(n.UserID)
	resp := &tailcfg.RegisterResponse{MachineAuthorized: true}
	if u != nil {
		resp.User = tailcfg.User{ID: userID(u.ID), DisplayName: u.Name, Created: u.CreatedAt}
		resp.Login = tailcfg.Login{ID: tailcfg.LoginID(userID(u.ID)), LoginName: u.Name, DisplayName: u.Name}
	}
	return resp, nil
}

// checkAuthKey checks the key's secret against its stored hash; the FSM then checks, at
// commit time, that it is neither revoked, expired nor used up.
func checkAuthKey(store *fsm.Store, s string) (string, error) {
	k, err := keys.Parse(s, keys.AuthKey)
	if err != nil {
		return "", errors.New("malformed auth key: it starts with ak_ (meshctl authkey create)")
	}
	rec := store.AuthKey(k.ID)
	if rec == nil || !k.Matches(rec.Hash) {
		return "", errors.New("unknown auth key: create one with meshctl authkey create")
	}
	return k.ID, nil
}

func (s *Server) logout(r *http.Request, n *fsm.Node) (*tailcfg.RegisterResponse, error) {
	if n != nil {
		c, err := fsm.NewCommand("node.delete", "node:"+n.Name, r.RemoteAddr, fsm.ByName{Name: n.Name})
		if err != nil {
			return nil, err
		}
		if _, err := s.Backend.Apply(r.Context(), c); err != nil {
			return nil, err
		}
	}
	return &tailcfg.RegisterResponse{NodeKeyExpired: true}, nil
}

// userID and nodeID give the protocol's numeric IDs: stable hashes of our string IDs.
func userID(id string) tailcfg.UserID { return tailcfg.UserID(hash63(id)) }
func nodeID(id string) tailcfg.NodeID { return tailcfg.NodeID(hash63(id)) }

func hash63(s string) int64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return int64(h.Sum64() >> 1)
}

// truncate cuts s to at most n bytes: what a machine reports of itself is kept within the
// state's caps rather than refused (it has no way to show the refusal to its user).
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
