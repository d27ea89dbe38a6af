package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"tailscale.com/control/ts2021"
	"tailscale.com/types/key"

	"meshwork.dev/coord/api"
	"meshwork.dev/node"
)

// coordClient talks to coord over the machine's Noise channel (node.ControlChannel).
type coordClient struct {
	base string // the control URL tsnet uses (the replica proxy when there are several)
	nc   *ts2021.Client
}

// dialCoord opens the machine's channel to coord. The node must be up.
func dialCoord(ctx context.Context, n *node.Node) (*coordClient, error) {
	nc, base, err := n.ControlChannel(ctx)
	if err != nil {
		return nil, err
	}
	return &coordClient{base: base, nc: nc}, nil
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
