package replica

import (
	"bytes"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// restoreGap is how far past the log's last index a restored snapshot is placed: room for
// the entries Raft may still append on its own (a configuration change, a no-op) between
// the moment the snapshot is made and the moment Raft installs it, so the snapshot lands at
// exactly the index it was made for.
const restoreGap = 64

// Restore replaces the whole state with the snapshot build makes for log index idx, and
// returns idx. It goes through Raft's user restore: this replica, which must lead, installs
// the snapshot and sends it whole to the followers (InstallSnapshot), so unlike a command it
// is bounded by no log entry's size; every replica ends with the same state, or none changes.
// Writes wait meanwhile, and every earlier one is applied before build runs.
func (r *Replica) Restore(build func(idx uint64) ([]byte, error)) (uint64, error) {
	if !r.IsLeader() {
		return 0, raft.ErrNotLeader
	}
	r.prop.gate.Lock()
	defer r.prop.gate.Unlock()
	if _, err := r.leaderBarrier(); err != nil {
		return 0, err
	}
	idx := r.raft.LastIndex() + restoreGap
	snap, err := build(idx)
	if err != nil {
		return 0, err
	}
	// Raft puts the snapshot one past the larger of the log's last index and meta's.
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: idx - 1, Size: int64(len(snap))}
	if err := r.raft.Restore(meta, bytes.NewReader(snap), time.Minute); err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	return idx, nil
}
