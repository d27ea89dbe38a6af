package replica

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// proposer feeds commands to Raft in groups (group commit). While depth groups are being
// committed, new commands queue; when one group is done the whole queue goes in as the
// next. Raft writes what reaches it together in one disk write and one replication round,
// so under load each fsync and each round trip carries many commands instead of a few —
// the disk and the CPU do less per write — while a lone command is proposed at once.
type proposer struct {
	raft  *raft.Raft
	depth int

	// gate is held shared by every apply until its command is committed, and exclusively by
	// a restore: while the state is replaced whole, writes wait.
	gate sync.RWMutex

	mu       sync.Mutex // guards queue and inflight
	queue    []*proposal
	inflight int // groups being committed
}

type proposal struct {
	data    []byte
	timeout time.Duration
	resp    any
	err     error
	done    chan struct{}
}

// apply commits data through Raft on this replica, the leader, and returns the FSM's
// response.
func (p *proposer) apply(data []byte, timeout time.Duration) (any, error) {
	p.gate.RLock()
	defer p.gate.RUnlock()
	pr := &proposal{data: data, timeout: timeout, done: make(chan struct{})}
	p.mu.Lock()
	p.queue = append(p.queue, pr)
	if p.inflight < p.depth {
		p.inflight++
		group := p.queue
		p.queue = nil
		p.mu.Unlock()
		p.commit(group)
	} else {
		p.mu.Unlock()
	}
	<-pr.done
	return pr.resp, pr.err
}

// commit proposes group and waits for it; then whatever queued meanwhile goes in as the
// next group, from a new goroutine so this caller can return.
func (p *proposer) commit(group []*proposal) {
	futures := make([]raft.ApplyFuture, len(group))
	for i, pr := range group {
		futures[i] = p.raft.Apply(pr.data, pr.timeout)
	}
	for i, f := range futures {
		pr := group[i]
		if pr.err = f.Error(); pr.err == nil {
			pr.resp = f.Response()
		}
		close(pr.done)
	}
	p.mu.Lock()
	next := p.queue
	p.queue = nil
	if len(next) == 0 {
		p.inflight--
	}
	p.mu.Unlock()
	if len(next) > 0 {
		go p.commit(next)
	}
}
