package relay

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"tailscale.com/tailcfg"
)

// serveAdmission answers the DERP server's admission questions ("may this node key
// connect?") with cfg.Admit, on a loopback port of its own: the DERP server asks by HTTP
// POST and refuses the client unless told yes (it fails closed when no answer comes).
// It returns the URL to give the DERP server.
func (r *Relay) serveAdmission() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	r.admit = &http.Server{Handler: http.HandlerFunc(r.admitHandler), ReadHeaderTimeout: 5 * time.Second}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := r.admit.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.logf("relay: admission: %v", err)
		}
	}()
	return "http://" + ln.Addr().String() + "/admit", nil
}

func (r *Relay) admitHandler(w http.ResponseWriter, req *http.Request) {
	var q tailcfg.DERPAdmitClientRequest
	if err := json.NewDecoder(io.LimitReader(req.Body, 4<<10)).Decode(&q); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), 4*time.Second)
	defer cancel()
	allow := r.cfg.Admit(ctx, q.NodePublic)
	if !allow {
		r.logf("relay: refused %v from %v: no machine on the mesh has that key", q.NodePublic.ShortString(), q.Source)
	}
	json.NewEncoder(w).Encode(tailcfg.DERPAdmitClientResponse{Allow: allow})
}
