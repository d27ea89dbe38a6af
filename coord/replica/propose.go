package replica

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// proposer feeds commands to Raft in groups (group commit). While depth groups are being
// committed, new commands queue; when one group is done the whole queue goes in as the
// next, as one log entry made by group. Raft writes it in one disk write and one
// replication round, and its work per entry is done once, so under load each fsync, round
// trip and entry carries many commands instead of a few — the disk and the CPU do less per
// write — while a lone command is proposed at once.
type proposer struct {
	raft  *raft.Raft
	depth int
	// group makes one entry of several commands; applying it answers []any, one response
	// per command.
	group func([][]byte) []byte

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
	p.propose(group)
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

// propose commits group as one entry and hands each command its own answer.
func (p *proposer) propose(group []*proposal) {
	data := group[0].data
	if len(group) > 1 {
		cmds := make([][]byte, len(group))
		for i, pr := range group {
			cmds[i] = pr.data
		}
		data = p.group(cmds)
	}
	f := p.raft.Apply(data, group[0].timeout)
	err := f.Error()
	var resps []any
	if err == nil && len(group) > 1 {
		resps, _ = f.Response().([]any)
	}
	for i, pr := range group {
		switch {
		case err != nil:
			pr.err = err
		case len(resps) == len(group):
			pr.resp = resps[i]
		default: // a lone command, or a group refused whole: the one answer for all
			pr.resp = f.Response()
		}
		close(pr.done)
	}
}
