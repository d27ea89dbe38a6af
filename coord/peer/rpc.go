package peer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/quic-go/quic-go"
)

// maxFrame bounds a request or answer.
const maxFrame = 16 << 20

// RemoteError is a handler's error, as the caller receives it.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return e.Msg }

// Handle serves method with h. Register before peers call.
func (t *Transport) Handle(method string, h Handler) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.handlers[method] = h
}

// Call sends req to method on the replica at addr and returns its answer. A handler's error
// comes back as *RemoteError.
func (t *Transport) Call(ctx context.Context, addr, method string, req []byte) ([]byte, error) {
	c, err := t.conn(ctx, addr, alpnRPC)
	if err != nil {
		return nil, err
	}
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	defer s.CancelRead(0)
	if d, ok := ctx.Deadline(); ok {
		s.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { s.SetDeadline(time.Now()) })
	defer stop()
	if err := writeFrame(s, []byte(method)); err != nil {
		return nil, err
	}
	if err := writeFrame(s, req); err != nil {
		return nil, err
	}
	s.Close()
	status := make([]byte, 1)
	if _, err := io.ReadFull(s, status); err != nil {
		return nil, fmt.Errorf("%s on %s: %w", method, addr, ctxErr(ctx, err))
	}
	resp, err := readFrame(s)
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", method, addr, ctxErr(ctx, err))
	}
	if status[0] != 0 {
		return nil, &RemoteError{Msg: string(resp)}
	}
	return resp, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (t *Transport) serveRPC(peer string, s *quic.Stream) {
	defer t.wg.Done()
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(30 * time.Second))
	method, err := readFrame(s)
	if err != nil {
		s.CancelRead(1)
		return
	}
	req, err := readFrame(s)
	if err != nil {
		s.CancelRead(1)
		return
	}
	t.mu.Lock()
	h := t.handlers[string(method)]
	t.mu.Unlock()
	var resp []byte
	if h == nil {
		err = fmt.Errorf("no RPC method %q", method)
	} else {
		ctx, cancel := context.WithTimeout(t.ctx, 30*time.Second)
		resp, err = h(ctx, peer, req)
		cancel()
	}
	status := byte(0)
	if err != nil {
		status, resp = 1, []byte(err.Error())
	}
	s.Write([]byte{status})
	writeFrame(s, resp)
}

func writeFrame(w io.Writer, b []byte) error {
	if len(b) > maxFrame {
		return fmt.Errorf("frame of %d bytes over the %d limit", len(b), maxFrame)
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

var errFrameTooBig = errors.New("frame over the size limit")

func readFrame(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxFrame {
		return nil, errFrameTooBig
	}
	b := make([]byte, size)
	_, err := io.ReadFull(r, b)
	return b, err
}
