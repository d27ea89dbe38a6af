package sshd

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// ShieldConfig says when the shield blocks an address: MaxFailures refused connections within
// Window block it for BlockFor.
type ShieldConfig struct {
	MaxFailures int           // default 5; negative disables the shield
	Window      time.Duration // default 1m
	BlockFor    time.Duration // default 10m

	// Block drops addr's traffic for d (the agent's nftables rule). nil: the Server only
	// refuses addr's connections itself. An error is logged; the in-process block stays.
	Block func(addr netip.Addr, d time.Duration) error
	// Unblock lifts what Block did, when the block ends, on Server.Unblock and on Close.
	Unblock func(addr netip.Addr) error
}

// Block is an address the shield blocks.
type Block struct {
	Addr     netip.Addr
	Until    time.Time
	Failures int
}

// shield counts failures per address and blocks the ones over the limit.
type shield struct {
	c    ShieldConfig
	logf func(string, ...any)
	now  func() time.Time

	mu       sync.Mutex
	failures map[netip.Addr][]time.Time // recent failures, oldest first; guarded by mu
	blocks   map[netip.Addr]*blockEntry // guarded by mu
	timers   sync.WaitGroup             // one per timer that has not run or been stopped
}

type blockEntry struct {
	Block
	timer *time.Timer // lifts the block at Until
}

func newShield(c ShieldConfig, logf func(string, ...any)) *shield {
	if c.MaxFailures == 0 {
		c.MaxFailures = 5
	}
	if c.Window <= 0 {
		c.Window = time.Minute
	}
	if c.BlockFor <= 0 {
		c.BlockFor = 10 * time.Minute
	}
	return &shield{c: c, logf: logf, now: time.Now, failures: map[netip.Addr][]time.Time{}, blocks: map[netip.Addr]*blockEntry{}}
}

// fail counts one refused connection from addr and reports whether it made addr blocked.
func (sh *shield) fail(addr netip.Addr) bool {
	if sh.c.MaxFailures < 0 || !addr.IsValid() {
		return false
	}
	now := sh.now()
	sh.mu.Lock()
	if sh.blocks[addr] != nil {
		sh.mu.Unlock()
		return false
	}
	recent := sh.failures[addr]
	for len(recent) > 0 && now.Sub(recent[0]) > sh.c.Window {
		recent = recent[1:]
	}
	recent = append(recent, now)
	if len(recent) < sh.c.MaxFailures {
		sh.failures[addr] = recent
		sh.mu.Unlock()
		return false
	}
	delete(sh.failures, addr)
	b := &blockEntry{Block: Block{Addr: addr, Until: now.Add(sh.c.BlockFor), Failures: len(recent)}}
	sh.timers.Add(1)
	b.timer = time.AfterFunc(sh.c.BlockFor, func() { sh.expire(b) })
	sh.blocks[addr] = b
	sh.mu.Unlock()

	sh.logf("sshd: shield: blocking %v for %v after %d failures", addr, sh.c.BlockFor, b.Failures)
	if sh.c.Block != nil {
		if err := sh.c.Block(addr, sh.c.BlockFor); err != nil {
			sh.logf("sshd: shield: block %v: %v", addr, err)
		}
	}
	return true
}

// blocked reports whether addr is blocked now.
func (sh *shield) blocked(addr netip.Addr) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.blocks[addr] != nil
}

func (sh *shield) list() []Block {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var out []Block
	for _, b := range sh.blocks {
		out = append(out, b.Block)
	}
	slices.SortFunc(out, func(a, b Block) int { return a.Addr.Compare(b.Addr) })
	return out
}

// expire lifts b when its time is up, unless it was lifted already.
func (sh *shield) expire(b *blockEntry) {
	defer sh.timers.Done()
	sh.mu.Lock()
	if sh.blocks[b.Addr] != b {
		sh.mu.Unlock()
		return
	}
	delete(sh.blocks, b.Addr)
	sh.mu.Unlock()
	sh.logf("sshd: shield: block of %v ended", b.Addr)
	if err := sh.lift(b.Addr); err != nil {
		sh.logf("sshd: shield: %v", err)
	}
}

// unblock lifts addr's block now.
func (sh *shield) unblock(addr netip.Addr) error {
	sh.mu.Lock()
	b := sh.blocks[addr]
	if b == nil {
		sh.mu.Unlock()
		return fmt.Errorf("sshd: %v is not blocked", addr)
	}
	sh.stopTimer(b)
	delete(sh.blocks, addr)
	delete(sh.failures, addr)
	sh.mu.Unlock()
	return sh.lift(addr)
}

func (sh *shield) lift(addr netip.Addr) error {
	if sh.c.Unblock == nil {
		return nil
	}
	if err := sh.c.Unblock(addr); err != nil {
		return fmt.Errorf("sshd: unblock %v: %w", addr, err)
	}
	return nil
}

// stopTimer stops b's timer; if it already fired, expire will find b gone and do nothing.
func (sh *shield) stopTimer(b *blockEntry) {
	if b.timer.Stop() {
		sh.timers.Done()
	}
}

// close lifts every block, so no drop rule outlives the Server.
func (sh *shield) close() error {
	sh.mu.Lock()
	var addrs []netip.Addr
	for a, b := range sh.blocks {
		sh.stopTimer(b)
		addrs = append(addrs, a)
	}
	clear(sh.blocks)
	sh.mu.Unlock()
	sh.timers.Wait()
	var first error
	for _, a := range addrs {
		if err := sh.lift(a); err != nil && first == nil {
			first = err
		}
	}
	return first
}
