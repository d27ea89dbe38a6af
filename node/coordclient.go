package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"tailscale.com/control/ts2021"
	"tailscale.com/ipn"
	"tailscale.com/net/netmon"
	"tailscale.com/net/tsdial"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	"meshwork.dev/coord/api"
)

// coordClient talks to coord over the control protocol's Noise channel, as this machine:
// its machine key (the one it joined with) is the credential, so an agent holds no secret
// of its own and a deleted machine is refused at once.
type coordClient struct {
	base string // the control URL tsnet uses (the replica proxy when there are several)
	nc   *ts2021.Client
}

// coord opens the machine's channel to coord. The node must be up.
func (n *Node) coord(ctx context.Context) (*coordClient, error) {
	ts, err := n.server()
	if err != nil {
		return nil, err
	}
	raw, err := ts.Store.ReadState(ipn.MachineKeyStateKey)
	if err != nil {
		return nil, fmt.Errorf("reading the machine key: %w", err)
	}
	var mk key.MachinePrivate
	if err := mk.UnmarshalText(raw); err != nil {
		return nil, fmt.Errorf("reading the machine key: %w", err)
	}
	pub, err := controlKey(ctx, ts.ControlURL)
	if err != nil {
		return nil, err
	}
	nc, err := ts2021.NewClient(ts2021.ClientOpts{ServerURL: ts.ControlURL, PrivKey: mk, ServerPubKey: pub,
		Dialer: tsdial.NewDialer(netmon.NewStatic()), Logf: n.logf})
	if err != nil {
		return nil, err
	}
	return &coordClient{base: ts.ControlURL, nc: nc}, nil
}

func (n *Node) logf(format string, args ...any) {
	if n.Logf != nil {
		n.Logf(format, args...)
	}
}

// controlKey fetches coord's control key (every replica presents the same one).
func controlKey(ctx context.Context, base string) (key.MachinePublic, error) {
	var out tailcfg.OverTLSPublicKeyResponse
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/key?v="+strconv.Itoa(int(tailcfg.CurrentCapabilityVersion)), nil)
	if err != nil {
		return key.MachinePublic{}, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return key.MachinePublic{}, fmt.Errorf("coord's control key: %w", err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return key.MachinePublic{}, fmt.Errorf("coord's control key: %w", err)
	}
	return out.PublicKey, nil
}

// state fetches what coord wants on this machine, waiting (up to about 30 s) for it to
// differ from last when there is one.
func (c *coordClient) state(ctx context.Context, last *api.MachineState) (*api.MachineState, error) {
	q := url.Values{}
	if last != nil {
		q.Set("index", strconv.FormatUint(last.Index, 10))
		q.Set("digest", last.Digest)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", "https://"+hostOf(c.base)+"/machine/meshwork/state?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	res, err := c.nc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("coord: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
		return nil, fmt.Errorf("coord: %s: %s", res.Status, b)
	}
	var st api.MachineState
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("coord: %w", err)
	}
	return &st, nil
}

// report tells coord what this machine observes.
func (c *coordClient) report(ctx context.Context, rep *api.MachineReport) error {
	res, err := c.nc.Post(ctx, "/machine/meshwork/report", key.NodePublic{}, rep)
	if err != nil {
		return fmt.Errorf("coord: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusNoContent && res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
		return fmt.Errorf("coord: %s: %s", res.Status, b)
	}
	return nil
}

// session tells coord of an SSH session this machine served.
func (c *coordClient) session(ctx context.Context, rep *api.SessionReport) error {
	res, err := c.nc.Post(ctx, "/machine/meshwork/session", key.NodePublic{}, rep)
	if err != nil {
		return fmt.Errorf("coord: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
		return fmt.Errorf("coord: %s: %s", res.Status, b)
	}
	return nil
}

func (c *coordClient) Close() error { return c.nc.Close() }

func hostOf(base string) string {
	if u, err := url.Parse(base); err == nil {
		return u.Host
	}
	return base
}

// AdvertiseRoutes sets the addresses this machine routes for others (its workspaces'):
// without them in its own prefs, its packet filter drops what peers send them.
func (n *Node) AdvertiseRoutes(ctx context.Context, routes []netip.Prefix) error {
	ts, err := n.server()
	if err != nil {
		return err
	}
	lc, err := ts.LocalClient()
	if err != nil {
		return err
	}
	_, err = lc.EditPrefs(ctx, &ipn.MaskedPrefs{Prefs: ipn.Prefs{AdvertiseRoutes: routes}, AdvertiseRoutesSet: true})
	return err
}
