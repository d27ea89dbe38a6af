package fsm

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"
)

// Command is one change, as the leader proposes it. Time is set by the proposer, never read
// from the clock in Apply, so every replica computes the same state.
type Command struct {
	Op      string          `json:"op"` // "user.create", ...
	V       int             `json:"v"`  // version of Op's payload
	Actor   string          `json:"actor"`
	Source  string          `json:"source,omitempty"`
	Time    time.Time       `json:"time"`
	IdemKey string          `json:"idem,omitempty"` // the request's idempotency key: see IdemKey
	Data    json.RawMessage `json:"data"`
}

// The first byte of a log entry says how the command in it is encoded.
const (
	// formatJSON: the command as JSON. Written by earlier builds; still read.
	formatJSON = 'J'
	// formatBinary: op, version, actor, source, time (Unix seconds, nanoseconds) and
	// idempotency key as varints (a string: its length, then its bytes), then the payload's
	// JSON to the end. Every replica decodes every entry: this takes no reflection and
	// no scan of the payload (JSON here was a tenth of an apply).
	formatBinary = 'B'
)

// Encode makes a log entry of c.
func (c *Command) Encode() ([]byte, error) {
	b := make([]byte, 0, 32+len(c.Op)+len(c.Actor)+len(c.Source)+len(c.IdemKey)+len(c.Data))
	b = append(b, formatBinary)
	b = appendString(b, c.Op)
	b = binary.AppendVarint(b, int64(c.V))
	b = appendString(b, c.Actor)
	b = appendString(b, c.Source)
	b = binary.AppendVarint(b, c.Time.Unix())
	b = binary.AppendUvarint(b, uint64(c.Time.Nanosecond()))
	b = appendString(b, c.IdemKey)
	return append(b, c.Data...), nil
}

// NewCommand builds a command with data marshalled as its payload, at version 1.
func NewCommand(op, actor, source string, data any) (*Command, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	return &Command{Op: op, V: 1, Actor: actor, Source: source, Time: time.Now().UTC(), Data: b}, nil
}

var errBadEntry = errors.New("not a command")

// decodeCommand reads a log entry in either format.
func decodeCommand(data []byte) (*Command, error) {
	if len(data) == 0 {
		return nil, errBadEntry
	}
	switch data[0] {
	case formatJSON:
		var c Command
		if err := json.Unmarshal(data[1:], &c); err != nil {
			return nil, err
		}
		return &c, nil
	case formatBinary:
		r := entryReader{b: data[1:]}
		c := &Command{Op: r.string(), V: int(r.varint()), Actor: r.string(), Source: r.string()}
		sec, nsec := r.varint(), r.uvarint()
		c.IdemKey = r.string()
		if r.bad || nsec >= uint64(time.Second) {
			return nil, errBadEntry
		}
		c.Time = time.Unix(sec, int64(nsec)).UTC()
		c.Data = r.b
		return c, nil
	}
	return nil, errBadEntry
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// entryReader reads what Encode wrote; bad is set once anything is short or malformed.
type entryReader struct {
	b   []byte
	bad bool
}

func (r *entryReader) uvarint() uint64 { return next(r, binary.Uvarint) }
func (r *entryReader) varint() int64   { return next(r, binary.Varint) }

func next[T uint64 | int64](r *entryReader, read func([]byte) (T, int)) T {
	v, n := read(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *entryReader) string() string {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
