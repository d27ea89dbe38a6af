package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestNAT builds the usual lab — an internet, a NAT router, two hosts behind it — and checks
// what a user of the lab relies on.
func TestNAT(t *testing.T) {
	l := New(t)
	in := l.Internet()
	r := l.Router("r1", in.Net)
	a, b := r.LANHost("a"), r.LANHost("b")
	routerPublic := r.Addr(in.Net)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("behind NAT, seen with the router's address", func(t *testing.T) {
		// (Debian's busybox 1.35 wget crashes with -T; ctx bounds it instead.)
		out, err := a.Run(ctx, "busybox", "wget", "-q", "-O", "-", in.URL())
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(out); got != routerPublic.String() {
			t.Errorf("internet saw %q, want the router's address %v", got, routerPublic)
		}
	})

	t.Run("DNS logs who asked", func(t *testing.T) {
		in.AddRecord("Example.Test", in.Addr)
		res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return a.DialContext(ctx, "udp", netip.AddrPortFrom(in.Addr, 53).String())
		}}
		addrs, err := res.LookupNetIP(ctx, "ip4", "example.test")
		if err != nil {
			t.Fatal(err)
		}
		if len(addrs) != 1 || addrs[0] != in.Addr {
			t.Errorf("example.test = %v, want [%v]", addrs, in.Addr)
		}
		if !askedBy(in.Queries(), "example.test", routerPublic) {
			t.Errorf("DNS log %v has no query for example.test from %v", in.Queries(), routerPublic)
		}
		if _, err := res.LookupNetIP(ctx, "ip4", "missing.test"); err == nil {
			t.Errorf("missing.test resolved; want NXDOMAIN")
		}
	})

	t.Run("LAN hosts reach each other, the internet cannot reach in", func(t *testing.T) {
		ln, err := a.Listen("tcp", ":8080")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go acceptAndGreet(ln)
		target := netip.AddrPortFrom(a.Addr(r.LAN), 8080).String()
		if err := greet(ctx, b, target); err != nil {
			t.Errorf("b → a over the LAN: %v", err)
		}
		// Even knowing the way in, the internet host cannot open a connection.
		in.Host.Route(r.LAN.Prefix(), routerPublic)
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		defer dcancel()
		if err := greet(dctx, in.Host, target); err == nil {
			t.Errorf("internet → a behind NAT succeeded; the router must drop new inbound connections")
		}
		if err := greet(ctx, r.Host, target); err != nil {
			t.Errorf("router → a (control: a is listening): %v", err)
		}
	})
}

func askedBy(qs []DNSQuery, name string, from netip.Addr) bool {
	for _, q := range qs {
		if q.Name == name && q.From.Addr() == from && q.Type == "A" {
			return true
		}
	}
	return false
}

func acceptAndGreet(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, "hello\n")
		c.Close()
	}
}

// greet dials addr from h and reads the greeting.
func greet(ctx context.Context, h *Host, addr string) error {
	c, err := h.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(b) != "hello\n" {
		return fmt.Errorf("read %q, want hello", b)
	}
	return nil
}

// logTB records what the lab logs.
type logTB struct {
	*testing.T
	mu   sync.Mutex
	logs []string
}

func (l *logTB) Logf(format string, args ...any) {
	l.mu.Lock()
	l.logs = append(l.logs, fmt.Sprintf(format, args...))
	l.mu.Unlock()
	l.T.Logf(format, args...)
}

func (l *logTB) sawLine(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.logs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// TestProc checks that a process runs inside its host, its output reaches the test log, and
// Stop ends it.
func TestProc(t *testing.T) {
	tb := &logTB{T: t}
	l := New(tb)
	n := l.Network("net")
	h := l.Host("h")
	addr := h.Attach(n)
	p := h.Start(nil, "sh", "-c", "ip -o -4 addr show dev net; echo to-stderr >&2; exec sleep 60")
	deadline := time.Now().Add(10 * time.Second)
	for !(tb.sawLine("h/sh: ") && tb.sawLine(addr.String()) && tb.sawLine("to-stderr")) {
		if time.Now().After(deadline) {
			t.Fatalf("output with %v and to-stderr never reached the log: %q", addr, tb.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.Stop()
	select {
	case <-p.Done():
	default:
		t.Fatalf("process still running after Stop")
	}
	if processAlive(p.Pid()) {
		t.Errorf("pid %d still exists after Stop", p.Pid())
	}
}

// TestCleanupAfterPanic runs a lab test that panics in a child test binary and checks that it
// left no namespace and no process behind.
func TestCleanupAfterPanic(t *testing.T) {
	if os.Getenv("LAB_PANIC_CHILD") != "" {
		panicWithLab(t) // this is the child
	}
	New(t) // skips without root
	cmd := exec.Command(os.Args[0], "-test.run=^TestCleanupAfterPanic$", "-test.v")
	cmd.Env = append(os.Environ(), "LAB_PANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "deliberate panic") {
		t.Fatalf("child should have panicked: %v\n%s", err, out)
	}
	left, _ := filepath.Glob(fmt.Sprintf("/var/run/netns/%s%d-*", Prefix, cmd.Process.Pid))
	if len(left) > 0 {
		t.Errorf("namespaces left after a panic: %v", left)
	}
	if strings.Contains(string(out), "child-sleeper-pid=") {
		var pid int
		fmt.Sscanf(string(out)[strings.Index(string(out), "child-sleeper-pid=")+len("child-sleeper-pid="):], "%d", &pid)
		if pid > 0 && processAlive(pid) {
			t.Errorf("process %d started by the panicking test still runs", pid)
		}
	} else {
		t.Errorf("child did not report its process:\n%s", out)
	}
}

// panicWithLab builds a lab, starts a process in it, and panics: the child's part.
func panicWithLab(t *testing.T) {
	l := New(t)
	h := l.Host("x")
	h.Attach(l.Network("n"))
	p := h.Start(nil, "sleep", "60")
	fmt.Printf("child-sleeper-pid=%d\n", p.Pid())
	panic("deliberate panic")
}

// TestOwnResolvConf: every host's processes see a resolv.conf of the host's own at
// /etc/resolv.conf; writing it leaves the machine's alone, and cleanup removes it.
func TestOwnResolvConf(t *testing.T) {
	machine, _ := os.ReadFile("/etc/resolv.conf")
	var dir string
	t.Run("lab", func(t *testing.T) {
		h := New(t).Host("a")
		dir = filepath.Dir(h.ResolvConf())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if out, err := h.Run(ctx, "cat", "/etc/resolv.conf"); err != nil || out != string(machine) {
			t.Errorf("host's resolv.conf = %q, %v; want a copy of the machine's %q", out, err, machine)
		}
		const mine = "nameserver 198.18.0.53\n"
		if _, err := h.Run(ctx, "sh", "-c", "printf '"+mine+"' >/etc/resolv.conf"); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(h.ResolvConf()); string(b) != mine {
			t.Errorf("host's file after the write = %q, want %q", b, mine)
		}
		if b, _ := os.ReadFile("/etc/resolv.conf"); string(b) != string(machine) {
			t.Fatalf("the machine's /etc/resolv.conf changed to %q", b)
		}
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s after cleanup: %v; want it gone", dir, err)
	}
}
