package ctl

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestWorkspaceIPv6: a workspace is reached over the mesh at both its addresses, IPv4 and
// IPv6, from a meshctl laptop (kernel TUN) and from a stock Tailscale client; plain OpenSSH
// to ws.mesh.internal (MagicDNS answers IPv6 first) connects at once instead of waiting out
// a timeout; meshctl status lists the workmachine's IPv6.
func TestWorkspaceIPv6(t *testing.T) {
	importEchoImage(t)
	ml := newMeshLab(t)
	ml.workmachine(t, "hv6wm1")
	lp := ml.laptop(t, "lp", ml.in.PublicHost("lp"))
	ml.mustCtl(ml.coord, "ws", "create", "six", "--machine", "hv6wm1", "--image", echoImage)
	w := ml.workspace(t, "six")
	if w.IPv6 == "" {
		t.Fatalf("workspace six has no IPv6: %+v", w)
	}

	for _, ip := range []string{w.IPv4, w.IPv6} {
		eventually(t, 30*time.Second, "laptop → six at "+ip, func() error {
			return wsGreeting(lp.host, net.JoinHostPort(ip, "8080"), "six")
		})
	}

	// Plain OpenSSH by name, through the OS resolver (MagicDNS) and the kernel TUN: the
	// mesh identity of the laptop is the credential, no keys.
	ssh := func() (string, time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		start := time.Now()
		out, err := lp.host.Run(ctx, "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
			"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", w.Owner+"@six.mesh.internal", "hostname")
		return out, time.Since(start), err
	}
	eventually(t, 30*time.Second, "ssh six.mesh.internal", func() error {
		_, _, err := ssh()
		return err
	})
	out, took, err := ssh()
	t.Logf("ssh %s@six.mesh.internal hostname: %q in %v", w.Owner, out, took.Round(time.Millisecond))
	if err != nil || out != "six\n" || took > 5*time.Second {
		t.Errorf("ssh %s@six.mesh.internal hostname: %q, %v, took %v; want six at once", w.Owner, out, err, took)
	}

	// meshctl status shows the workmachine's IPv6 too.
	var wmIPs []string
	for _, p := range lp.status(t, ml.meshctl).Peers {
		if p.Name == "hv6wm1" {
			wmIPs = p.IPs
		}
	}
	if len(wmIPs) != 2 || !strings.Contains(wmIPs[1], ":") {
		t.Errorf("meshctl status --json: hv6wm1's IPs %v; want its IPv4 and IPv6", wmIPs)
	}
	if text, _ := lp.meshctl(t, ml.meshctl, "status"); len(wmIPs) == 2 && !strings.Contains(text, wmIPs[1]) {
		t.Errorf("meshctl status does not show hv6wm1's IPv6 %s:\n%s", wmIPs[1], text)
	}

	// A stock Tailscale client reaches both addresses too.
	ts := ml.stockClient(t, ml.in.PublicHost("stock"))
	for _, ip := range []string{w.IPv4, w.IPv6} {
		eventually(t, 30*time.Second, "stock client → six at "+ip, func() error {
			out, err := ts("nc", ip, "8080")
			if err == nil && !strings.Contains(out, "hello from six") {
				err = fmt.Errorf("read %q", out)
			}
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
	}
}
