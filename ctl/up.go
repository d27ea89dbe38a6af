package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"meshwork.dev/node"
)

var upCmd = &command{
	name:    "up",
	summary: "Join this machine to the mesh (starts the daemon if needed)",
	usage:   "--coord URL --auth-key KEY [--hostname H] [--state DIR] [--socket PATH] [--userspace] [--socks5 ADDR] [--dns=false]",
	examples: []string{
		"meshctl up --coord http://10.0.0.1:8080 --auth-key ak_...",
		"meshctl up --coord http://10.0.0.1:8080 --auth-key ak_... --hostname laptop",
	},
	run: runUp,
}

var downCmd = &command{name: "down", summary: "Take this machine off the mesh (its identity stays)", usage: "[--socket PATH]",
	examples: []string{"meshctl down"}, run: runDown}

var statusCmd = &command{name: "status", summary: "Show this machine and its peers: address, path (direct or relayed)",
	usage: "[--json] [--socket PATH]", examples: []string{"meshctl status", "meshctl status --json"}, run: runStatus}

var pingCmd = &command{name: "ping", summary: "Ping a peer over the mesh and say which path answered",
	usage: "HOST [--count N] [--socket PATH]", examples: []string{"meshctl ping laptop-b", "meshctl ping 100.64.0.3 --count 3"}, run: runPing}

var ncCmd = &command{name: "nc", summary: "Connect stdin/stdout to HOST:PORT over the mesh (for ssh ProxyCommand)",
	usage: "HOST PORT [--socket PATH]", examples: []string{"meshctl nc api 22", "ssh -o ProxyCommand='meshctl nc %h %p' api"}, run: runNc}

// daemonPaths adds --state and --socket to fs and returns where the daemon lives.
func daemonPaths(fs *flag.FlagSet) (state, socket *string) {
	state = fs.String("state", defaultState(), "the daemon's state `dir`ectory")
	socket = fs.String("socket", os.Getenv("MESHCTL_SOCKET"), "the daemon's local API `path` (default STATE/meshctl.sock; env MESHCTL_SOCKET)")
	return state, socket
}

func socketPath(state, socket string) string {
	if socket != "" {
		return socket
	}
	return filepath.Join(state, "meshctl.sock")
}

// local is an HTTP client for the daemon's socket.
func local(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return new(net.Dialer).DialContext(ctx, "unix", socket)
	}}}
}

// call sends in to the daemon and decodes its answer into out.
func call(ctx context.Context, socket, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://meshctl"+path, body)
	if err != nil {
		return err
	}
	resp, err := local(socket).Do(req)
	if err != nil {
		return fmt.Errorf("no daemon at %s (start one with meshctl up): %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		return errors.New(e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func runUp(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	var req node.UpRequest
	fs.StringVar(&req.AuthKey, "auth-key", "", "auth `key` (ak_…) admitting this machine; not needed to rejoin")
	fs.StringVar(&req.Hostname, "hostname", "", "the `name` to ask for on the mesh (default: the host name)")
	state, socket := daemonPaths(fs)
	fs.Bool("userspace", os.Geteuid() != 0, "a daemon started here runs userspace networking (see meshctl daemon)")
	daemonModeFlags(fs)
	if err := e.args(fs, args, 0); err != nil {
		return err
	}
	if req.Coord = e.global.coord; req.Coord == "" {
		return usageErrorf("up: no coord address; pass --coord URL")
	}
	var daemonArgs []string // the daemon's own flags, for one started here
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "userspace", "socks5", "dns":
			daemonArgs = append(daemonArgs, "--"+f.Name+"="+f.Value.String())
		}
	})
	sock := socketPath(*state, *socket)
	if err := ensureDaemon(ctx, e, *state, sock, daemonArgs...); err != nil {
		return err
	}
	var s node.Summary
	if err := call(ctx, sock, "POST", "/up", req, &s); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if e.global.json {
		return e.printJSON(s)
	}
	if err := e.printf("on the mesh as %s (%s); %d peer(s)\n", s.Self.DNSName, strings.Join(s.Self.IPs, ", "), len(s.Peers)); err != nil {
		return err
	}
	if s.SOCKS5 != "" {
		e.printf("SOCKS5 proxy into the mesh: %s (curl --socks5-hostname %s http://PEER:PORT)\n", s.SOCKS5, s.SOCKS5)
	}
	if s.DNS != "" {
		e.printf("DNS: %s\n", s.DNS)
	}
	return e.printf("next: meshctl status, meshctl ping PEER\n")
}

// ensureDaemon starts `meshctl daemon` (with args) in the background unless one answers
// on sock — or one already holds state and is still starting: then it waits for that one
// (a second would only refuse the state directory).
func ensureDaemon(ctx context.Context, e *env, state, sock string, args ...string) error {
	if answers(sock) {
		return nil
	}
	logPath := filepath.Join(state, "daemon.log")
	if pid := node.StatePID(state); pid != 0 {
		fmt.Fprintf(e.stderr, "waiting for the daemon (pid %d) using %s to open %s\n", pid, state, sock)
		if !waitAnswers(ctx, sock) {
			return fmt.Errorf("the daemon (pid %d) using %s did not answer on %s within 10 s (does it serve another --socket?); see %s", pid, state, sock, logPath)
		}
		return nil
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(self, append([]string{"daemon", "--state", state, "--socket", sock}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the daemon: %w", err)
	}
	fmt.Fprintf(e.stderr, "started the daemon (pid %d, log %s)\n", cmd.Process.Pid, logPath)
	cmd.Process.Release()
	if !waitAnswers(ctx, sock) {
		return fmt.Errorf("the daemon did not open %s within 10 s; see %s", sock, logPath)
	}
	return nil
}

// answers says whether a daemon serves on sock.
func answers(sock string) bool {
	c, err := net.Dial("unix", sock)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// waitAnswers waits up to 10 s for a daemon to answer on sock.
func waitAnswers(ctx context.Context, sock string) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(50 * time.Millisecond) {
		if answers(sock) {
			return true
		}
	}
	return false
}

func runDown(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	state, socket := daemonPaths(fs)
	if err := e.args(fs, args, 0); err != nil {
		return err
	}
	var out map[string]string
	if err := call(ctx, socketPath(*state, *socket), "POST", "/down", nil, &out); err != nil {
		return fmt.Errorf("down: %w", err)
	}
	return e.printf("off the mesh; meshctl up --coord URL rejoins with the same identity\n")
}

func runStatus(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	state, socket := daemonPaths(fs)
	if err := e.args(fs, args, 0); err != nil {
		return err
	}
	sock := socketPath(*state, *socket)
	if c := workspaceClient(); c != nil && !answers(sock) {
		return workspaceStatus(ctx, e, c)
	}
	var s node.Summary
	if err := call(ctx, sock, "GET", "/status", nil, &s); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if e.global.json {
		return e.printJSON(s)
	}
	if s.State != "Running" {
		return e.printf("%s: not on the mesh (meshctl up --coord URL --auth-key KEY)\n", s.State)
	}
	if s.SOCKS5 != "" {
		e.printf("SOCKS5 proxy: %s\n", s.SOCKS5)
	}
	if s.DNS != "" {
		e.printf("DNS: %s\n", s.DNS)
	}
	rows := [][]string{{s.Self.Name, strings.Join(s.Self.IPs, ","), s.Self.OS, "self", "-"}}
	for _, p := range s.Peers {
		path := p.Path
		switch {
		case p.Path == "direct":
			path += " " + p.Addr
		case p.Path == "relayed":
			path += " via " + p.Relay
		}
		hs := "-"
		if !p.LastHandshake.IsZero() {
			hs = time.Since(p.LastHandshake).Round(time.Second).String() + " ago"
		}
		rows = append(rows, []string{p.Name, strings.Join(p.IPs, ","), p.OS, path, hs})
	}
	return e.table("NAME\tADDRESSES\tOS\tPATH\tHANDSHAKE", rows)
}

func runPing(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	count := fs.Int("count", 1, "how many `pings`")
	state, socket := daemonPaths(fs)
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	for i := range *count {
		var r node.PingResult
		if err := call(ctx, socketPath(*state, *socket), "POST", "/ping", map[string]string{"host": fs.Arg(0)}, &r); err != nil {
			return fmt.Errorf("ping %s: %w", fs.Arg(0), err)
		}
		if e.global.json {
			e.printJSON(r)
		} else {
			e.printf("pong from %s (%s) via %s in %.1f ms\n", fs.Arg(0), r.IP, r.Path, r.Latency)
		}
		if i+1 < *count {
			time.Sleep(time.Second)
		}
	}
	return nil
}

func runNc(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	state, socket := daemonPaths(fs)
	if err := e.args(fs, args, 2); err != nil {
		return err
	}
	c, err := node.DialVia(socketPath(*state, *socket), net.JoinHostPort(fs.Arg(0), fs.Arg(1)))
	if err != nil {
		return fmt.Errorf("nc: %w", err)
	}
	defer c.Close()
	go func() {
		io.Copy(c, e.stdin)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	_, err = io.Copy(e.stdout, c)
	return err
}
