package coord

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/replica"
)

// RPC methods that carry a backup restore from the replica that received it to the leader:
// the backup in chunks (a call's frame is bounded), then the restore itself.
const (
	methodRestoreChunk = "coord.restore.chunk"
	methodRestore      = "coord.restore"
)

const (
	restoreChunk = 8 << 20   // under the RPC frame limit
	maxUpload    = 256 << 20 // as the admin API bounds a backup
	uploadTTL    = 10 * time.Minute
)

// restoreReq asks the leader to restore the backup the caller has uploaded.
type restoreReq struct {
	Actor  string   `json:"actor"`
	Source string   `json:"source"`
	Size   int      `json:"size"`
	Sum    [32]byte `json:"sum"` // SHA-256 of the backup
}

// restoreResp is the leader's answer: the log index of the restore, or why it was refused.
type restoreResp struct {
	Index uint64     `json:"index"`
	Err   *fsm.Error `json:"err,omitempty"`
}

// Restore replaces the whole state with a backup's, as actor from source: checked, then
// installed on every replica through Raft's snapshot path (no log entry could hold a large
// one). It returns once this replica has the restored state.
func (b *backend) Restore(ctx context.Context, actor, source string, backup []byte) error {
	rep, err := b.replica()
	if err != nil {
		return err
	}
	if err := b.writable(rep); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req := restoreReq{Actor: actor, Source: source, Size: len(backup), Sum: sha256.Sum256(backup)}
	var resp restoreResp
	if rep.IsLeader() {
		resp = b.restoreHere(rep, req, backup)
	} else if resp, err = b.forwardRestore(ctx, rep, req, backup); err != nil {
		return err
	}
	if resp.Err != nil {
		return resp.Err
	}
	return rep.WaitApplied(ctx, resp.Index)
}

// restoreHere restores backup on this replica, the leader.
func (b *backend) restoreHere(rep *replica.Replica, req restoreReq, backup []byte) restoreResp {
	bk, err := fsm.ParseBackup(backup)
	if err != nil {
		return restoreResp{Err: asFSMError(err)}
	}
	ev := fsm.AuditEvent{Time: time.Now().UTC(), Actor: req.Actor, Source: req.Source,
		Detail: fmt.Sprintf("backup of %d bytes", len(backup))}
	idx, err := rep.Restore(func(idx uint64) ([]byte, error) {
		return b.fsm.Store().RestoreSnapshot(bk, idx, ev)
	})
	if err != nil {
		return restoreResp{Err: asFSMError(err)}
	}
	b.logf("coord: %s restored a backup of %d bytes (log index %d)", req.Actor, len(backup), idx)
	return restoreResp{Index: idx}
}

func asFSMError(err error) *fsm.Error {
	var fe *fsm.Error
	if errors.As(err, &fe) {
		return fe
	}
	return &fsm.Error{Code: "internal", Msg: err.Error()}
}

// forwardRestore uploads backup to the leader in chunks, then has it restore it.
func (b *backend) forwardRestore(ctx context.Context, rep *replica.Replica, req restoreReq, backup []byte) (restoreResp, error) {
	for off := 0; off == 0 || off < len(backup); off += restoreChunk {
		chunk := binary.BigEndian.AppendUint64(nil, uint64(off))
		chunk = append(chunk, backup[off:min(off+restoreChunk, len(backup))]...)
		if _, err := rep.Forward(ctx, methodRestoreChunk, chunk); err != nil {
			return restoreResp{}, unavailable("sending the backup to the leader: %v; retry the restore", err)
		}
	}
	data, _ := json.Marshal(req)
	out, err := rep.Forward(ctx, methodRestore, data)
	if err != nil {
		return restoreResp{}, unavailable("restore on the leader: %v; check the state, then retry if it is unchanged", err)
	}
	var resp restoreResp
	if err := json.Unmarshal(out, &resp); err != nil {
		return restoreResp{}, fmt.Errorf("leader's answer: %w", err)
	}
	return resp, nil
}

// uploads holds the backups replicas are sending this one, the leader, to restore: one per
// replica at a time.
type uploads struct {
	mu sync.Mutex // guards m
	m  map[string]*upload
}

type upload struct {
	data  []byte
	start time.Time
}

// add appends a chunk (its offset, then its bytes) to peer's upload; offset 0 starts anew.
func (u *uploads) add(peer string, chunk []byte) error {
	if len(chunk) < 8 {
		return errors.New("restore chunk: no offset")
	}
	off, data := binary.BigEndian.Uint64(chunk), chunk[8:]
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]*upload{}
	}
	for p, up := range u.m {
		if time.Since(up.start) > uploadTTL {
			delete(u.m, p)
		}
	}
	up := u.m[peer]
	if off == 0 {
		up = &upload{start: time.Now()}
		u.m[peer] = up
	}
	switch {
	case up == nil || off != uint64(len(up.data)):
		return fmt.Errorf("restore chunk at %d out of order; start the restore again", off)
	case len(up.data)+len(data) > maxUpload:
		delete(u.m, peer)
		return fmt.Errorf("backup over %d bytes", maxUpload)
	}
	up.data = append(up.data, data...)
	return nil
}

// take removes and returns peer's upload if it is the backup req describes.
func (u *uploads) take(peer string, req restoreReq) ([]byte, error) {
	u.mu.Lock()
	up := u.m[peer]
	delete(u.m, peer)
	u.mu.Unlock()
	if up == nil || len(up.data) != req.Size || sha256.Sum256(up.data) != req.Sum {
		return nil, errors.New("the backup did not arrive whole at the leader; retry the restore")
	}
	return up.data, nil
}

func (b *backend) handleRestoreChunk(ctx context.Context, peer string, chunk []byte) ([]byte, error) {
	if rep, err := b.replica(); err != nil || !rep.IsLeader() {
		return nil, raft.ErrNotLeader
	}
	return nil, b.uploads.add(peer, chunk)
}

func (b *backend) handleRestore(ctx context.Context, peer string, data []byte) ([]byte, error) {
	rep, err := b.replica()
	if err != nil || !rep.IsLeader() {
		return nil, raft.ErrNotLeader
	}
	var req restoreReq
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, err
	}
	backup, err := b.uploads.take(peer, req)
	if err != nil {
		return nil, err
	}
	return json.Marshal(b.restoreHere(rep, req, backup))
}
