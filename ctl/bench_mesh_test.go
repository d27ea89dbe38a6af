package ctl

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshwork.dev/coord/api"
)

// BenchmarkUpToFirstConn: `meshctl up` on a fresh machine → the first TCP connection to a
// peer's service over the mesh, on loopback: p50 and p95 (target p50 ≤ 1 s).
func BenchmarkUpToFirstConn(b *testing.B) {
	mesh, token := startMeshwork(b)
	meshctl, _ := exec.LookPath("meshctl")
	c := &api.Client{Base: mesh.urls[0], Token: token}
	var k api.NewAuthKey
	if err := c.Do(context.Background(), "POST", "/v1/authkeys", api.CreateAuthKey{Reusable: true}, &k); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	run := func(args ...string) (string, error) {
		cmd := exec.Command(meshctl, args...)
		cmd.Env = append(os.Environ(), "MESHCTL_COORD="+mesh.urls[0])
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	daemon := func(name string) string {
		state := filepath.Join(dir, name)
		mesh.startProc(b, dir, meshctl, "daemon", "--state", state, "--userspace") // the machine's own stack stays untouched
		daemonUp(b, state)
		return state
	}
	// The peer: a daemon on the mesh with a service on its loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi\n"))
			c.Close()
		}
	}()
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	peerState := daemon("peer")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, err := run("up", "--state", peerState, "--auth-key", k.Key, "--hostname", "peer")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			mesh.logTails(b)
			b.Fatalf("peer up: not within 30 s: %v: %s", err, out)
		}
	}
	var times []time.Duration
	for i := range b.N {
		state := daemon(fmt.Sprint("m", i))
		start := time.Now()
		if out, err := run("up", "--state", state, "--auth-key", k.Key, "--hostname", fmt.Sprint("m", i)); err != nil {
			b.Fatalf("up: %v: %s", err, out)
		}
		for {
			out, err := run("nc", "peer", port, "--state", state)
			if err == nil && strings.TrimSpace(out) == "hi" {
				break
			}
			if time.Since(start) > 30*time.Second {
				mesh.logTails(b)
				b.Fatalf("no connection to the peer 30 s after up: %v %s", err, out)
			}
		}
		times = append(times, time.Since(start))
		run("down", "--state", state)
	}
	p50, p95 := percentiles(times)
	b.ReportMetric(p50.Seconds(), "s-p50")
	b.ReportMetric(p95.Seconds(), "s-p95")
	b.Logf("meshctl up → first TCP connection to a peer, %d runs: p50 %v, p95 %v (target p50 ≤ 1 s)", len(times), p50.Round(time.Millisecond), p95.Round(time.Millisecond))
}
