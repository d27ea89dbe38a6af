package ctl

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshwork.dev/overlay/lab"
)

// stockTailscale returns the stock tailscaled and tailscale built from the pinned
// tailscale.com module (about a minute the first time; kept in bin/).
func stockTailscale(t *testing.T) (tailscaled, tailscale string) {
	bin, err := filepath.Abs("../bin/stock")
	if err != nil {
		t.Fatal(err)
	}
	tailscaled, tailscale = filepath.Join(bin, "tailscaled"), filepath.Join(bin, "tailscale")
	if _, err := os.Stat(tailscale); err == nil {
		return tailscaled, tailscale
	}
	t.Logf("building stock tailscaled and tailscale v%s into %s", tailscaleVersion, bin)
	cmd := exec.Command("go", "install", "tailscale.com/cmd/tailscaled@v"+tailscaleVersion, "tailscale.com/cmd/tailscale@v"+tailscaleVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the stock Tailscale client: %v\n%s", err, out)
	}
	return tailscaled, tailscale
}

// tailscaleVersion is the tailscale.com module go.mod pins.
const tailscaleVersion = "1.102.5"

// stockClient runs a stock tailscaled (userspace networking) on h, joins it to the mesh as
// "stock" with `tailscale up --login-server … --authkey …`, and returns a way to run the
// tailscale CLI against it.
func (ml *meshLab) stockClient(t *testing.T, h *lab.Host) func(args ...string) (string, error) {
	tailscaled, tailscale := stockTailscale(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "tailscaled.sock")
	h.Start(nil, tailscaled, "--tun=userspace-networking", "--statedir="+dir, "--socket="+sock, "--port=0", "--no-logs-no-support")
	ts := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := h.Command(ctx, tailscale, append([]string{"--socket=" + sock}, args...)...).CombinedOutput()
		return string(out), err
	}
	eventually(t, 60*time.Second, "tailscale up", func() error {
		out, err := ts("up", "--login-server="+ml.coord.url(), "--authkey="+ml.key, "--hostname=stock")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	return ts
}

// TestStockTailscale: a stock tailscaled joins with `tailscale up --login-server … --authkey …`
// and it and a meshctl laptop reach each other's services by name, both ways.
func TestStockTailscale(t *testing.T) {
	ml := newMeshLab(t)
	a := ml.laptop(t, "a", ml.in.PublicHost("a"))
	stock := ml.in.PublicHost("stock")
	serveGreeting(t, stock, 9000)
	ts := ml.stockClient(t, stock)
	eventually(t, 30*time.Second, "meshctl laptop → stock client", func() error {
		return a.ncGreeting(t, ml.meshctl, "stock.mesh.internal", "stock")
	})
	eventually(t, 30*time.Second, "stock client → meshctl laptop", func() error {
		out, err := ts("nc", "a", "9000")
		if err == nil && !strings.Contains(out, "hello from a") {
			err = fmt.Errorf("read %q", out)
		}
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	out, _ := ts("status")
	t.Logf("tailscale status on the stock client:\n%s", out)
}
