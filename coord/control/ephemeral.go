package control

import (
	"context"
	"time"

	"meshwork.dev/coord/fsm"
)

// streamOpened notes a map stream of node id, cancelling a pending removal.
func (s *Server) streamOpened(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams == nil {
		s.streams, s.removal = map[string]int{}, map[string]*time.Timer{}
	}
	s.streams[id]++
	if s.streams[id] == 1 {
		s.setOnline(id, true)
	}
	if t := s.removal[id]; t != nil {
		t.Stop()
		delete(s.removal, id)
	}
}

// streamClosed notes the end of a map stream; an ephemeral node with none left is removed
// once it has stayed away for the grace period.
func (s *Server) streamClosed(n *fsm.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[n.ID]--
	if s.streams[n.ID] > 0 {
		return
	}
	delete(s.streams, n.ID)
	s.setOnline(n.ID, false)
	if !n.Ephemeral {
		return
	}
	grace := s.EphemeralGrace
	if grace == 0 {
		grace = 30 * time.Second
	}
	s.removal[n.ID] = time.AfterFunc(grace, func() { s.removeEphemeral(n) })
}

func (s *Server) removeEphemeral(n *fsm.Node) {
	s.mu.Lock()
	if s.streams[n.ID] > 0 {
		s.mu.Unlock()
		return
	}
	delete(s.removal, n.ID)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := fsm.NewCommand("node.delete", "coord", "ephemeral", fsm.ByName{Name: n.Name})
	if err == nil {
		_, err = s.Backend.Apply(ctx, c)
	}
	if err != nil {
		s.logf("control: removing ephemeral node %s: %v", n.Name, err)
		return
	}
	s.logf("control: removed ephemeral node %s, away for %v", n.Name, s.EphemeralGrace)
}

// Close stops pending removals and online writes, and waits for the writers.
func (s *Server) Close() {
	s.mu.Lock()
	for id, t := range s.removal {
		t.Stop()
		delete(s.removal, id)
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Unlock()
	s.writers.Wait()
}
