package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/node"
	"meshwork.dev/node/sshd"
	"meshwork.dev/overlay/meshdns"
)

var sshCmd = &command{name: "ssh", summary: "SSH into a workspace by name, as your mesh identity; list and replay recorded sessions",
	usage:    "[USER@]HOST [-- CMD...] | ssh recordings [--ws NAME] | ssh play ID",
	examples: []string{"meshctl ssh api", "meshctl ssh api -- make test", "meshctl ssh recordings --ws api", "meshctl ssh play s_1a2b3c"},
	run:      runSSH}

var sshConfigCmd = &command{name: "ssh-config", summary: "Print ssh_config Host blocks for your workspaces and write their host keys",
	usage:    "[--known-hosts PATH] [--socket PATH]",
	examples: []string{"meshctl ssh-config >> ~/.ssh/config", "meshctl ssh-config --known-hosts ~/.ssh/meshwork_known_hosts"},
	run:      runSSHConfig}

var sftpServerCmd = &command{name: "sftp-server", summary: "Serve SFTP on stdin/stdout (run inside workspaces by their SSH server)",
	usage: "", examples: []string{"meshctl sftp-server"}, run: runSFTPServer}

func runSSH(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "recordings":
			return sshRecordings(ctx, e, args[1:])
		case "play":
			return sshPlay(ctx, e, args[1:])
		}
	}
	fs := e.flags()
	state, socket := daemonPaths(fs)
	knownHosts := fs.String("known-hosts", defaultKnownHosts(), "known_hosts `file` for workspace host keys")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usageErrorf("ssh: which workspace? run 'meshctl ssh --help'")
	}
	host := rest[0]
	rest = rest[1:]
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
	}
	sock := socketPath(*state, *socket)
	login, err := e.sshLogin(ctx, sock, host, *knownHosts)
	if err != nil {
		return err
	}
	bin, err := exec.LookPath("ssh")
	if err != nil {
		return fmt.Errorf("ssh: OpenSSH's ssh client is not installed (apt-get install openssh-client)")
	}
	sshArgs := sshOptions(sock, *knownHosts)
	if login != "" {
		sshArgs = append(sshArgs, "-l", login)
	}
	sshArgs = append(sshArgs, host)
	if len(rest) > 0 {
		// As OpenSSH does: the words joined by spaces, one command line for the login shell.
		sshArgs = append(sshArgs, "--", strings.Join(rest, " "))
	}
	cmd := exec.CommandContext(ctx, bin, sshArgs...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &exitError{code: ee.ExitCode()}
	}
	return err
}

// sshLogin refreshes the workspaces' host keys and returns the login to use for host: the
// workspace's owner, unless host names one (USER@HOST). With coord to ask, a name that is
// neither a workspace nor a machine on the mesh is an error here, before ssh adds its own.
func (e *env) sshLogin(ctx context.Context, sock, host, knownHosts string) (string, error) {
	if e.global.coord == "" || e.global.token == "" {
		return "", nil
	}
	list, err := writeKnownHosts(ctx, e, knownHosts, meshDomain(ctx, sock))
	if err != nil {
		fmt.Fprintf(e.stderr, "meshctl: host keys not refreshed: %v\n", err)
		return "", nil
	}
	_, name, named := strings.Cut(host, "@")
	if !named {
		name = host
	}
	for _, w := range list {
		if w.Name == meshdns.Label(name) && !named {
			return w.Owner, nil // by default, the workspace's own user
		}
		if w.Name == meshdns.Label(name) {
			return "", nil // USER@HOST says whom
		}
	}
	if !isPeer(ctx, sock, name) {
		return "", fmt.Errorf("ssh: no workspace or machine called %q on the mesh (meshctl ws list shows yours)", name)
	}
	return "", nil
}

// isPeer reports whether the local daemon knows a machine called name (or at address name);
// it says yes when it cannot tell, and lets ssh find out.
func isPeer(ctx context.Context, socket, name string) bool {
	if _, err := netip.ParseAddr(name); err == nil {
		return true
	}
	var s node.Summary
	if call(ctx, socket, "GET", "/status", nil, &s) != nil {
		return true
	}
	for _, p := range append(s.Peers, s.Self) {
		if p.Name == meshdns.Label(name) {
			return true
		}
	}
	return false
}

// exitError passes a child's exit code on as meshctl's, silently.
type exitError struct{ code int }

func (e *exitError) Error() string { return "exit status " + strconv.Itoa(e.code) }

// sshOptions make OpenSSH reach mesh hosts through the daemon (in TUN and userspace mode
// alike) and check host keys against the file ssh-config writes.
func sshOptions(socket, knownHosts string) []string {
	self := selfPath()
	return []string{
		"-o", fmt.Sprintf("ProxyCommand=%s nc --socket %s %%h %%p", self, socket),
		"-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "StrictHostKeyChecking=accept-new",
		"-o", "ConnectTimeout=15",
	}
}

// selfPath is how to run this meshctl again: as it was called (found on $PATH if bare), so
// a copy or link under another name still runs as meshctl.
func selfPath() string {
	if p, err := exec.LookPath(os.Args[0]); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
	}
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "meshctl"
}

func defaultKnownHosts() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "meshwork", "known_hosts")
}

// meshDomain is the mesh's DNS domain as the local daemon knows it (from its own name), or
// the default when no daemon answers.
func meshDomain(ctx context.Context, socket string) string {
	var s node.Summary
	if call(ctx, socket, "GET", "/status", nil, &s) == nil {
		if d := meshdns.DomainOf(s.Self.DNSName); d != "" {
			return d
		}
	}
	return meshdns.DefaultDomain
}

// writeKnownHosts writes every workspace's host key the caller may see, under its bare and
// full names (in domain), and returns the workspaces.
func writeKnownHosts(ctx context.Context, e *env, path, domain string) ([]api.Workspace, error) {
	var list []api.Workspace
	if err := e.call(ctx, "GET", "/v1/workspaces", nil, &list); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	for _, w := range list {
		if w.HostKey != "" {
			fmt.Fprintf(&b, "%s,%s.%s %s\n", w.Name, w.Name, domain, strings.TrimSpace(w.HostKey))
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	return list, os.WriteFile(path, b.Bytes(), 0o600)
}

func runSSHConfig(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	state, socket := daemonPaths(fs)
	knownHosts := fs.String("known-hosts", defaultKnownHosts(), "known_hosts `file` to write the host keys to")
	if err := e.args(fs, args, 0); err != nil {
		return err
	}
	sock := socketPath(*state, *socket)
	domain := meshDomain(ctx, sock)
	list, err := writeKnownHosts(ctx, e, *knownHosts, domain)
	if err != nil {
		return err
	}
	opts := sshOptions(sock, *knownHosts)
	e.printf("# Meshwork workspaces, from meshctl ssh-config (host keys in %s)\n", *knownHosts)
	for _, w := range list {
		e.printf("Host %s %s.%s\n    HostKeyAlias %s\n    User %s\n", w.Name, w.Name, domain, w.Name, w.Owner)
		for i := 1; i < len(opts); i += 2 {
			k, v, _ := strings.Cut(opts[i], "=")
			if k == "StrictHostKeyChecking" {
				v = "yes"
			}
			e.printf("    %s %s\n", k, v)
		}
	}
	return nil
}

func runSFTPServer(ctx context.Context, e *env, args []string) error {
	if err := e.args(e.flags(), args, 0); err != nil {
		return err
	}
	return sshd.ServeSFTP(stdio{e.stdin, e.stdout})
}

// stdio is stdin and stdout as one stream.
type stdio struct {
	io.Reader
	io.Writer
}

func (stdio) Close() error { return nil }

func sshRecordings(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	ws := fs.String("ws", "", "only the sessions into this `workspace`")
	if err := e.args(fs, args, 0); err != nil {
		return err
	}
	var recs []api.Recording
	if err := e.call(ctx, "GET", "/v1/recordings?workspace="+url.QueryEscape(*ws), nil, &recs); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(recs)
	}
	if len(recs) == 0 {
		return e.printf("no recorded sessions yet: every interactive ssh session into a workspace is recorded\n")
	}
	var rows [][]string
	for _, r := range recs {
		rows = append(rows, []string{r.ID, r.Workspace, r.User, r.Node, r.Login, when(&r.Start), time.Duration(r.Duration * float64(time.Second)).Round(time.Second).String(), strconv.FormatInt(r.Size, 10)})
	}
	return e.table("ID\tWORKSPACE\tUSER\tFROM\tLOGIN\tSTART\tDURATION\tBYTES", rows)
}

func sshPlay(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	speed := fs.Float64("speed", 1, "replay `factor` (2: twice as fast)")
	raw := fs.Bool("raw", false, "print the asciicast v2 file instead of replaying it")
	idle := fs.Duration("idle", 2*time.Second, "longest pause to keep")
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	var cast bytes.Buffer
	if err := e.call(ctx, "GET", "/v1/recordings/"+url.PathEscape(fs.Arg(0)), nil, &cast); err != nil {
		return err
	}
	if *raw {
		_, err := e.stdout.Write(cast.Bytes())
		return err
	}
	return replay(ctx, e.stdout, &cast, *speed, *idle)
}

// replay writes an asciicast v2 recording's output with its timing.
func replay(ctx context.Context, w io.Writer, r io.Reader, speed float64, idle time.Duration) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	if !sc.Scan() {
		return errors.New("ssh play: an empty recording")
	}
	var last float64
	for sc.Scan() {
		var ev []any
		if json.Unmarshal(sc.Bytes(), &ev) != nil || len(ev) != 3 {
			continue
		}
		at, _ := ev[0].(float64)
		kind, _ := ev[1].(string)
		data, _ := ev[2].(string)
		if kind != "o" {
			continue
		}
		wait := min(time.Duration((at-last)/max(speed, 0.01)*float64(time.Second)), idle)
		last = at
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if _, err := io.WriteString(w, data); err != nil {
			return err
		}
	}
	return sc.Err()
}
