package coord

import (
	"context"
	"time"

	"tailscale.com/types/key"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
)

// onMesh reports whether node key k belongs to a machine on the mesh: the DERP relay
// carries packets for those alone. A machine that has just joined may not have reached this
// replica yet, so a key not found waits for the nodes table to change, until ctx ends.
func (b *backend) onMesh(ctx context.Context, k key.NodePublic) bool {
	for {
		store, err := b.Read(ctx, api.Stale)
		if err != nil {
			return false
		}
		if store.NodeByKey(k.String()) != nil {
			return true
		}
		idx := store.TableIndex(fsm.TableNodes)
		if store.WaitIndex(ctx, idx, fsm.TableNodes) <= idx {
			return false // ctx ended
		}
	}
}

// endStreams marks offline the nodes this replica marked online in an earlier boot: their
// streams ended with it. It retries until the write is in, or ctx ends.
func (b *backend) endStreams(ctx context.Context, replica, stream string) {
	for wait := 100 * time.Millisecond; ctx.Err() == nil; wait = min(2*wait, 5*time.Second) {
		c, _ := fsm.NewCommand("node.streams-ended", "coord", "start", fsm.StreamsEnded{Replica: replica, Stream: stream})
		if res, err := b.Apply(ctx, c); err == nil && res.Err == nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}
