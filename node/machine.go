package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"tailscale.com/control/ts2021"
	"tailscale.com/ipn"
	"tailscale.com/net/netmon"
	"tailscale.com/net/tsdial"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// ControlChannel opens the machine's channel to coord over the control protocol's Noise
// transport, as this machine: its machine key (the one it joined with) is the credential, so
// an agent holds no secret of its own and a deleted machine is refused at once. It returns the
// channel and the control URL it speaks to (the replica proxy when there are several). The
// node must be up.
func (n *Node) ControlChannel(ctx context.Context) (*ts2021.Client, string, error) {
	ts, err := n.server()
	if err != nil {
		return nil, "", err
	}
	raw, err := ts.Store.ReadState(ipn.MachineKeyStateKey)
	if err != nil {
		return nil, "", fmt.Errorf("reading the machine key: %w", err)
	}
	var mk key.MachinePrivate
	if err := mk.UnmarshalText(raw); err != nil {
		return nil, "", fmt.Errorf("reading the machine key: %w", err)
	}
	pub, err := controlKey(ctx, ts.ControlURL)
	if err != nil {
		return nil, "", err
	}
	nc, err := ts2021.NewClient(ts2021.ClientOpts{ServerURL: ts.ControlURL, PrivKey: mk, ServerPubKey: pub,
		Dialer: tsdial.NewDialer(netmon.NewStatic()), Logf: n.logf})
	if err != nil {
		return nil, "", err
	}
	return nc, ts.ControlURL, nil
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

// WhoIs names the user behind a mesh address (ip:port) as coord registered its machine.
func (n *Node) WhoIs(ctx context.Context, remote string) (user, machine string, err error) {
	ts, err := n.server()
	if err != nil {
		return "", "", err
	}
	lc, err := ts.LocalClient()
	if err != nil {
		return "", "", err
	}
	who, err := lc.WhoIs(ctx, remote)
	if err != nil {
		return "", "", fmt.Errorf("whois %s: %w", remote, err)
	}
	return who.UserProfile.LoginName, who.Node.ComputedName, nil
}
