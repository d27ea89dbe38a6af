package ctl

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"meshwork.dev/overlay/lab"
)

// BenchmarkSSH: the echo of one keystroke in an interactive session (a PTY running cat),
// over mesh SSH into a workspace, beside OpenSSH's sshd reached directly on the same
// workmachine in the same run (target ≤ +1 ms at p50); and scp's throughput into the
// workspace as a ratio of raw TCP over the mesh between the same two machines.
func BenchmarkSSH(b *testing.B) {
	importEchoImage(b)
	ml := newMeshLab(b)
	wm := &workmachine{name: "wm1", host: ml.in.PublicHost("wm1"), state: filepath.Join(b.TempDir(), "wm1"), ml: ml}
	wm.proc = wm.host.StartShared(nil, ml.meshctl, "node", "--coord", ml.coord.url(), "--auth-key", ml.wmKey,
		"--state", wm.state, "--hostname", "wm1", "--tools", staticTools(b))
	b.Cleanup(func() { wm.removeAll(b) })
	lp := ml.laptop(b, "lp", ml.in.PublicHost("lp"))
	ml.mustCtl(ml.coord, "ws", "create", "api", "--machine", "wm1", "--image", echoImage)
	api := ml.workspace(b, "api")

	signer := newSigner(b)
	baseline := startSSHD(b, wm.host, net.JoinHostPort(wm.host.Addr(ml.in.Net).String(), "2222"), signer)
	keys := 200 * max(b.N, 1)
	var mesh, direct []time.Duration
	eventually(b, 30*time.Second, "mesh ssh into api", func() (err error) {
		mesh, err = keystrokes(lp.host, api.IPv4+":22", "admin", nil, keys)
		return err
	})
	direct, err := keystrokes(lp.host, baseline, "root", signer, keys)
	if err != nil {
		b.Fatalf("OpenSSH baseline: %v", err)
	}
	m50, m95 := percentiles(mesh)
	d50, _ := percentiles(direct)
	b.ReportMetric(float64(m50.Microseconds())/1000, "ms-keystroke-p50")
	b.ReportMetric(float64(d50.Microseconds())/1000, "ms-openssh-p50")
	b.ReportMetric(float64((m50-d50).Microseconds())/1000, "ms-over-openssh")
	b.Logf("keystroke echo, %d keys: mesh SSH p50 %v p95 %v; OpenSSH direct p50 %v; +%v (target ≤ +1 ms)",
		keys, m50, m95, d50, m50-d50)

	raw := meshTCP(b, lp.host, wm.host, 64<<20)
	scp := scpRate(b, ml, lp, 64<<20)
	b.ReportMetric(scp/raw, "scp/raw")
	b.Logf("scp into the workspace %.0f Mbit/s, raw TCP over the mesh %.0f Mbit/s: %.2f×", scp, raw, scp/raw)
}

func newSigner(b *testing.B) ssh.Signer {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// startSSHD runs Debian's sshd in h on addr (root logins by key only) and returns addr.
func startSSHD(b *testing.B, h *lab.Host, addr string, client ssh.Signer) string {
	dir := b.TempDir()
	hostKey := filepath.Join(dir, "host_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		b.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	auth := filepath.Join(dir, "authorized_keys")
	os.WriteFile(auth, ssh.MarshalAuthorizedKey(client.PublicKey()), 0o600)
	os.MkdirAll("/run/sshd", 0o755)
	cfg := filepath.Join(dir, "sshd_config")
	os.WriteFile(cfg, []byte(fmt.Sprintf("ListenAddress %s\nHostKey %s\nAuthorizedKeysFile %s\nPermitRootLogin prohibit-password\n"+
		"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPidFile %s/sshd.pid\nStrictModes no\n", addr, hostKey, auth, dir)), 0o600)
	h.Start(nil, "/usr/sbin/sshd", "-D", "-e", "-f", cfg)
	eventually(b, 10*time.Second, "sshd up", func() error {
		c, err := h.DialContext(context.Background(), "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	return addr
}

// keystrokes opens a PTY session running cat at addr from h and times the echo of n
// single-byte writes.
func keystrokes(h *lab.Host, addr, user string, key ssh.Signer, n int) ([]time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := h.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ClientConfig{User: user, HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second}
	if key != nil {
		cfg.Auth = []ssh.AuthMethod{ssh.PublicKeys(key)}
	}
	cc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	c := ssh.NewClient(cc, chans, reqs)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{ssh.ECHO: 0}); err != nil {
		return nil, err
	}
	in, _ := s.StdinPipe()
	out, _ := s.StdoutPipe()
	if err := s.Start("stty raw -echo; cat"); err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond) // let stty take effect
	buf := make([]byte, 1)
	var times []time.Duration
	for i := range n + 10 {
		start := time.Now()
		if _, err := in.Write([]byte{'a' + byte(i%26)}); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(out, buf); err != nil {
			return nil, err
		}
		if i >= 10 { // warm-up
			times = append(times, time.Since(start))
		}
	}
	return times, nil
}

// meshTCP is the throughput in Mbit/s of one TCP stream from h to peer's mesh address.
func meshTCP(b *testing.B, h, peer *lab.Host, size int) float64 {
	ln, err := peer.Listen("tcp", ":5001")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	out, err := peer.Run(context.Background(), "ip", "-4", "-o", "addr", "show", "dev", "meshwork0")
	if err != nil {
		b.Fatal(err)
	}
	ip := strings.Split(strings.Fields(out)[3], "/")[0]
	c, err := h.DialContext(context.Background(), "tcp", ip+":5001")
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	io.CopyN(c, rand.Reader, int64(size))
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
	c.Close()
	return float64(size*8) / time.Since(start).Seconds() / 1e6
}

// scpRate is scp's throughput in Mbit/s uploading size bytes into the workspace api.
func scpRate(b *testing.B, ml *meshLab, lp *laptop, size int) float64 {
	cfg, _, code := sshRun(lp, nil, ml.meshctl, "--coord", ml.coord.url(), "--token", ml.token, "ssh-config")
	if code != 0 {
		b.Fatalf("ssh-config: exit %d", code)
	}
	cfgPath := filepath.Join(lp.state, "ssh_config")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	src := filepath.Join(lp.state, "scp.bin")
	f, _ := os.Create(src)
	io.CopyN(f, rand.Reader, int64(size))
	f.Close()
	start := time.Now()
	if _, errOut, code := sshRun(lp, nil, "scp", "-F", cfgPath, "-o", "BatchMode=yes", src, "api:scp.bin"); code != 0 {
		b.Fatalf("scp: exit %d: %s", code, errOut)
	}
	return float64(size*8) / time.Since(start).Seconds() / 1e6
}
