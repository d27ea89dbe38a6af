// Package lab builds test networks out of Linux network namespaces: hosts on bridged LANs,
// NAT routers, and an "internet" host whose HTTP server echoes the caller's address and whose
// DNS server logs who asked. Every test makes its own lab with unique names and removes it on
// cleanup, even after a failure or panic. Only addresses the lab assigned are ever used.
package lab

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Prefix starts the name of every namespace a lab makes; `make lab-clean` removes what a killed
// run left behind by it.
const Prefix = "mwl-"

// TB is the part of testing.TB the lab needs. Tests pass their *testing.T; other programs
// (the demo) pass their own.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
}

// A Lab is one test's set of hosts and networks. Make it with New.
type Lab struct {
	t  TB
	id string // unique among live labs: pid and a counter

	mu    sync.Mutex // guards the fields below
	hosts []*Host
	procs []*Proc
	inet  *Internet

	nextNet atomic.Int32 // next /24 to hand out inside 198.18.0.0/15
}

var labCount atomic.Int32

// New makes an empty lab removed by t's cleanup. Without root it skips the test.
func New(t TB) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("lab: needs root for network namespaces (run as root, as CI does)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("lab: needs iproute2's ip (run scripts/deps.sh)")
	}
	reapDead(t.Logf)
	l := &Lab{t: t, id: fmt.Sprintf("%d-%d", os.Getpid(), labCount.Add(1))}
	t.Cleanup(l.close)
	return l
}

// nsName is the namespace name for a host (or switch) called name in this lab.
func (l *Lab) nsName(name string) string { return Prefix + l.id + "-" + name }

// newSubnet hands out the next unused /24 of 198.18.0.0/15 (RFC 2544's benchmarking range).
// Labs are isolated from each other, so parallel labs may use the same subnets.
func (l *Lab) newSubnet() netip.Prefix {
	n := l.nextNet.Add(1) - 1
	if n >= 512 {
		l.t.Fatalf("lab: out of subnets (512 networks per lab)")
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + byte(n/256), byte(n % 256), 0}), 24)
}

// close stops every process and removes every namespace of the lab.
func (l *Lab) close() {
	l.mu.Lock()
	procs, hosts, inet := l.procs, l.hosts, l.inet
	l.procs, l.hosts, l.inet = nil, nil, nil
	l.mu.Unlock()
	if inet != nil {
		inet.close()
	}
	for _, p := range procs {
		p.Stop()
	}
	for _, h := range hosts { // switches too: each network's bridge lives in a host of its own
		h.remove(l.t.Logf)
	}
}

// reapDead removes namespaces left by lab processes that no longer run (a killed test binary).
func reapDead(logf func(string, ...any)) {
	names, _ := filepath.Glob("/var/run/netns/" + Prefix + "*")
	for _, path := range names {
		name := filepath.Base(path)
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(name, Prefix), "-", 2)[0])
		if err != nil || processAlive(pid) {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			logf("lab: removing stale namespace %s: %v: %s", name, err, out)
		}
	}
	etcs, _ := filepath.Glob(netnsEtc(Prefix + "*"))
	for _, dir := range etcs {
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(filepath.Base(dir), Prefix), "-", 2)[0])
		if err == nil && !processAlive(pid) {
			os.RemoveAll(dir)
		}
	}
}

func processAlive(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}
