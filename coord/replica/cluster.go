package replica

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"meshwork.dev/coord/api"
)

// RPC methods the replica serves to its peers.
const (
	methodAddVoter  = "replica.addvoter"
	methodReadIndex = "replica.readindex"
	methodRemove    = "replica.remove"
)

// ErrNoLeader is returned when no leader is known within the wait.
var ErrNoLeader = errors.New("no coord leader: a majority of replicas must be up")

// Leader waits (until ctx ends, at most 5 s) for a known leader and returns its ID and
// cluster address.
func (r *Replica) Leader(ctx context.Context) (id, addr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		a, i := r.raft.LeaderWithID()
		if a != "" {
			return string(i), string(a), nil
		}
		select {
		case <-ctx.Done():
			return "", "", ErrNoLeader
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// IsLeader reports whether this replica is the leader now.
func (r *Replica) IsLeader() bool { return r.raft.State() == raft.Leader }

// Forward calls method on the leader. The call is abandoned (ErrLeaderChanged) as soon as
// this replica learns of another leader, so a dead leader costs an election, not a timeout.
func (r *Replica) Forward(ctx context.Context, method string, req []byte) ([]byte, error) {
	id, addr, err := r.Leader(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, now := r.raft.LeaderWithID(); string(now) != id {
					cancel(ErrLeaderChanged)
					return
				}
			}
		}
	}()
	resp, err := r.tr.Call(ctx, addr, method, req)
	if cause := context.Cause(ctx); errors.Is(cause, ErrLeaderChanged) {
		return nil, cause
	}
	return resp, err
}

// ErrLeaderChanged is returned by Forward when the leader changed during the call.
var ErrLeaderChanged = errors.New("the leader changed during the call")

// Barrier waits until the local state reflects every write committed before the call: the
// leader commits a barrier entry (proving it still leads, in a term where it has committed)
// and names the last index its state machine applied; this replica waits to apply as far.
func (r *Replica) Barrier(ctx context.Context) error {
	var idx uint64
	if r.IsLeader() {
		var err error
		if idx, err = r.leaderBarrier(); err != nil {
			return err
		}
	} else {
		resp, err := r.Forward(ctx, methodReadIndex, nil)
		if err != nil {
			return err
		}
		if len(resp) != 8 {
			return errors.New("read index: malformed answer")
		}
		idx = binary.BigEndian.Uint64(resp)
	}
	return r.WaitApplied(ctx, idx)
}

func (r *Replica) leaderBarrier() (uint64, error) {
	if err := r.raft.Barrier(5 * time.Second).Error(); err != nil {
		return 0, fmt.Errorf("read barrier: %w", err)
	}
	return r.fsm.AppliedIndex(), nil
}

// WaitApplied waits until the local state machine has applied the command at index idx.
func (r *Replica) WaitApplied(ctx context.Context, idx uint64) error {
	if err := r.fsm.WaitApplied(ctx, idx); err != nil {
		return fmt.Errorf("waiting to apply index %d: %w", idx, err)
	}
	return nil
}

// Fresh reports whether the local state is recent enough for a default read: this replica
// leads, or heard from a leader within a second.
func (r *Replica) Fresh() bool {
	if r.IsLeader() {
		return true
	}
	a, _ := r.raft.LeaderWithID()
	return a != "" && time.Since(r.raft.LastContact()) < time.Second
}

func (r *Replica) handleReadIndex(ctx context.Context, peer string, _ []byte) ([]byte, error) {
	if !r.IsLeader() {
		return nil, raft.ErrNotLeader
	}
	idx, err := r.leaderBarrier()
	if err != nil {
		return nil, err
	}
	return binary.BigEndian.AppendUint64(nil, idx), nil
}

// addVoter is the request of a replica that holds a cluster certificate to become a voter.
type addVoter struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

func (r *Replica) handleAddVoter(ctx context.Context, peer string, req []byte) ([]byte, error) {
	var av addVoter
	if err := json.Unmarshal(req, &av); err != nil {
		return nil, err
	}
	if av.ID != peer {
		return nil, fmt.Errorf("replica %q may only add itself, not %q", peer, av.ID)
	}
	if !r.IsLeader() {
		return r.Forward(ctx, methodAddVoter, req)
	}
	err := r.raft.AddVoter(raft.ServerID(av.ID), raft.ServerAddress(av.Addr), 0, 10*time.Second).Error()
	if err != nil {
		return nil, fmt.Errorf("adding voter %s: %w", av.ID, err)
	}
	r.cfg.Logf("replica %s: %s (%s) joined the cluster", r.cfg.ID, av.ID, av.Addr)
	return nil, nil
}

// Status reports the cluster as this replica sees it.
func (r *Replica) Status() (api.Cluster, error) {
	f := r.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return api.Cluster{}, err
	}
	_, leader := r.raft.LeaderWithID()
	c := api.Cluster{
		ID: r.cfg.ID, Leader: string(leader), State: r.raft.State().String(),
		Term: r.raft.CurrentTerm(), CommitIndex: r.raft.CommitIndex(), AppliedIndex: r.raft.AppliedIndex(),
	}
	for _, s := range f.Configuration().Servers {
		c.Members = append(c.Members, api.Member{
			ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter, Leader: s.ID == leader,
		})
	}
	return c, nil
}

// RemoveMember removes replica id from the cluster, through the leader.
func (r *Replica) RemoveMember(ctx context.Context, id string) error {
	if !r.IsLeader() {
		_, err := r.Forward(ctx, methodRemove, []byte(id))
		return err
	}
	return r.removeMember(id)
}

func (r *Replica) handleRemove(ctx context.Context, peer string, req []byte) ([]byte, error) {
	if !r.IsLeader() {
		return nil, raft.ErrNotLeader
	}
	return nil, r.removeMember(string(req))
}

func (r *Replica) removeMember(id string) error {
	f := r.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			return r.raft.RemoveServer(s.ID, 0, 10*time.Second).Error()
		}
	}
	return ErrNoMember{id}
}

// ErrNoMember is returned for removing a replica that is not a member.
type ErrNoMember struct{ ID string }

func (e ErrNoMember) Error() string {
	return fmt.Sprintf("no replica %q in the cluster (see meshctl cluster status)", e.ID)
}
