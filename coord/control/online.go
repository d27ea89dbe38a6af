package control

import (
	"cmp"
	"context"
	"errors"
	"time"

	"meshwork.dev/coord/fsm"
)

// offlineGrace is OfflineGrace's default.
const offlineGrace = 5 * time.Second

// onlineState is a node's online flag: what it is to become, what was written last, and
// whether a writer is at it.
type onlineState struct {
	want    bool
	written bool
	known   bool // written holds what this replica wrote
	busy    bool
}

// setOnline records, through Raft, that node id now has map streams here (on) or none. One
// goroutine per node writes, in the order asked, and ends when the state says what was asked
// last. Called with s.mu held.
func (s *Server) setOnline(id string, on bool) {
	if s.Stream == "" {
		return
	}
	if s.online == nil {
		s.online = map[string]*onlineState{}
		s.ctx, s.cancel = context.WithCancel(context.Background())
	}
	st := s.online[id]
	if st == nil {
		st = &onlineState{}
		s.online[id] = st
	}
	st.want = on
	if st.busy || s.ctx.Err() != nil {
		return
	}
	st.busy = true
	s.writers.Add(1)
	go s.writeOnline(id, st)
}

func (s *Server) writeOnline(id string, st *onlineState) {
	defer s.writers.Done()
	for fails := 0; ; {
		s.mu.Lock()
		want := st.want
		if st.known && want == st.written || s.ctx.Err() != nil {
			st.busy = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if !want && !s.staysAway(st) {
			continue // back within the grace: look again
		}
		err := s.apply(s.ctx, "node.online", "coord", "map stream", fsm.Online{ID: id, Stream: s.Stream, Online: want})
		if err == nil || errors.Is(err, fsm.ErrNotFound) { // not found: the node is gone, nothing to say
			s.mu.Lock()
			st.written, st.known, fails = want, true, 0
			s.mu.Unlock()
			continue
		}
		fails++
		s.logf("control: node %s online=%v: %v (retrying)", id, want, err)
		select {
		case <-s.ctx.Done():
		case <-time.After(min(time.Duration(fails)*200*time.Millisecond, 5*time.Second)):
		}
	}
}

// staysAway waits out OfflineGrace and reports whether the node still has no stream here.
func (s *Server) staysAway(st *onlineState) bool {
	select {
	case <-s.ctx.Done():
		return false
	case <-time.After(cmp.Or(s.OfflineGrace, offlineGrace)):
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !st.want
}
