package adminapi

import (
	"encoding/base64"
	"net/http"
	"net/netip"
	"slices"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/secret"
)

// Exits are shared ways out: admins add and remove them; every user lists them and may pin
// their own workspaces to any of them. No answer carries an exit's private key.

// OpenExitKey decrypts a WireGuard exit's stored private key (base64, as wg genkey prints it).
func OpenExitKey(k *secret.Key, x *fsm.Exit) (string, error) {
	sealed, err := base64.StdEncoding.DecodeString(x.PrivateKey)
	if err != nil {
		return "", err
	}
	b, err := k.Open(sealed, []byte(secret.ExitKeyAAD(x.Name)))
	return string(b), err
}

func apiExit(x *fsm.Exit) api.Exit {
	return api.Exit{Name: x.Name, Kind: x.Kind, Node: x.Node, Endpoint: x.Endpoint, PublicKey: x.PublicKey,
		Address: x.Address, DNS: slices.Clone(x.DNS), PublicIP: x.PublicIP, CreatedAt: x.CreatedAt}
}

func (s *Server) createExit(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.CreateExit
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := adminOnly(c, "adding exits"); err != nil {
		return err
	}
	if err := fsm.ValidName("exit", req.Name); err != nil {
		return err
	}
	x, err := s.newExit(req)
	if err != nil {
		return err
	}
	if err := s.apply(r, c, "exit.create", x, x); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apiExit(x))
	return nil
}

// newExit makes the exit a request describes, its private key sealed.
func (s *Server) newExit(req api.CreateExit) (*fsm.Exit, error) {
	if req.PublicIP != "" {
		if _, err := netip.ParseAddr(req.PublicIP); err != nil {
			return nil, invalid("exit %q: public IP %q is not an IP address", req.Name, req.PublicIP)
		}
	}
	switch {
	case (req.WireGuard == "") == (req.Node == ""):
		return nil, invalid("exit %q: give exactly one of a wg-quick file (meshctl exit add %s --wireguard FILE) or a mesh node (--node NODE)", req.Name, req.Name)
	case req.Node != "":
		return &fsm.Exit{Name: req.Name, Kind: fsm.ExitNode, Node: req.Node, PublicIP: req.PublicIP}, nil
	}
	wg, err := parseWGQuick(req.WireGuard)
	if err != nil {
		return nil, invalid("exit %q: %v", req.Name, err)
	}
	if s.Secrets == nil {
		return nil, apiErr(http.StatusServiceUnavailable, api.CodeUnavailable,
			"coord has no secret key to encrypt exits' private keys at rest: start every replica with the same --secret-key-file FILE")
	}
	sealed := s.Secrets.Seal([]byte(wg.privateKey), []byte(secret.ExitKeyAAD(req.Name)))
	return &fsm.Exit{Name: req.Name, Kind: fsm.ExitWireGuard, Endpoint: wg.endpoint, PublicKey: wg.publicKey,
		Address: wg.address, DNS: wg.dns, PublicIP: req.PublicIP, PrivateKey: base64.StdEncoding.EncodeToString(sealed)}, nil
}

func (s *Server) listExits(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.watchRead(w, r, fsm.TableExits)
	if err != nil {
		return err
	}
	out := []api.Exit{}
	for _, x := range store.Exits() {
		out = append(out, apiExit(x))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getExit(w http.ResponseWriter, r *http.Request, c *caller) error {
	store, err := s.read(r)
	if err != nil {
		return err
	}
	x := store.Exit(r.PathValue("name"))
	if x == nil {
		return notFound("no exit %q (see meshctl exit list)", r.PathValue("name"))
	}
	writeJSON(w, http.StatusOK, apiExit(x))
	return nil
}

func (s *Server) deleteExit(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := adminOnly(c, "removing exits"); err != nil {
		return err
	}
	if err := s.apply(r, c, "exit.delete", fsm.ByName{Name: r.PathValue("name")}, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// setWorkspaceExit pins a workspace's egress to an exit, or ("") unpins it: its owner or an
// admin, live.
func (s *Server) setWorkspaceExit(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.SetExit
	if err := decode(w, r, &req); err != nil {
		return err
	}
	store, ws, err := s.ownWorkspace(r, c)
	if err != nil {
		return err
	}
	var out fsm.Workspace
	if err := s.apply(r, c, "workspace.exit", fsm.WorkspaceExit{Workspace: ws.Name, Exit: req.Exit}, &out); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiWorkspace(&out, userName(store, out.OwnerID)))
	return nil
}
