package control

import (
	"context"
	"errors"
	"time"

	"meshwork.dev/coord/fsm"
)

// onlineState is what a node's online flag is to become, and whether a writer is at it.
type onlineState struct {
	want bool
	busy bool
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
	written, first := false, true
	for fails := 0; ; {
		s.mu.Lock()
		want := st.want
		if !first && want == written || s.ctx.Err() != nil {
			st.busy = false
			delete(s.online, id)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		err := s.apply(s.ctx, "node.online", "coord", "map stream", fsm.Online{ID: id, Stream: s.Stream, Online: want})
		switch {
		case err == nil:
			written, first, fails = want, false, 0
		case errors.Is(err, fsm.ErrNotFound):
			written, first = want, false // the node is gone: nothing to say
		default:
			fails++
			s.logf("control: node %s online=%v: %v (retrying)", id, want, err)
			select {
			case <-s.ctx.Done():
			case <-time.After(min(time.Duration(fails)*200*time.Millisecond, 5*time.Second)):
			}
		}
	}
}
