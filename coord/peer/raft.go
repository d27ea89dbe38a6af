package peer

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// RaftLayer returns the transport as a raft.StreamLayer: each Dial is a new stream on a
// cached connection to the peer.
func (t *Transport) RaftLayer() raft.StreamLayer {
	return &raftLayer{t: t, closed: make(chan struct{})}
}

type raftLayer struct {
	t         *Transport
	closeOnce sync.Once
	closed    chan struct{}
}

var errLayerClosed = errors.New("raft layer closed")

func (l *raftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.t.raftCh:
		return c, nil
	case <-l.closed:
		return nil, errLayerClosed
	case <-l.t.ctx.Done():
		return nil, errLayerClosed
	}
}

func (l *raftLayer) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *raftLayer) Addr() net.Addr { return advertised(l.t.addr) }

func (l *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(l.t.ctx, timeout)
	defer cancel()
	c, err := l.t.conn(ctx, string(address), alpnRaft)
	if err != nil {
		return nil, err
	}
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return &streamConn{Stream: s, c: c}, nil
}

// advertised is the address Raft tells its peers: the one they dial, as configured.
type advertised string

func (a advertised) Network() string { return "udp" }
func (a advertised) String() string  { return string(a) }
