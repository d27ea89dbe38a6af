package sshd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// recorder writes one PTY session as an asciicast v2 file: a header line, then one JSON array per
// event, [seconds, "o"|"i"|"r"|"m", data]. A nil *recorder records nothing.
type recorder struct {
	path  string
	start time.Time
	max   int64

	mu      sync.Mutex
	f       *os.File          // guarded by mu; nil once closed
	written int64             // bytes in the file; guarded by mu
	full    bool              // the size limit was reached; guarded by mu
	partial map[string][]byte // an incomplete UTF-8 sequence held back per stream; guarded by mu
}

type castHeader struct {
	Version   int               `json:"version"`
	Width     uint16            `json:"width"`
	Height    uint16            `json:"height"`
	Timestamp int64             `json:"timestamp"`
	Env       map[string]string `json:"env"`
	Title     string            `json:"title"`
}

func newRecorder(path string, max int64, width, height uint16, term, title string, start time.Time) (*recorder, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	r := &recorder{path: path, start: start, max: max, f: f, partial: map[string][]byte{}}
	h := castHeader{Version: 2, Width: width, Height: height, Timestamp: start.Unix(), Env: map[string]string{"TERM": term}, Title: title}
	line, err := marshalLine(h)
	if err == nil {
		err = r.write(line)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// event records data written on stream kind ("o" output, "i" input).
func (r *recorder) event(kind string, data []byte) {
	if r == nil || len(data) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil || r.full {
		return
	}
	buf := append(r.partial[kind], data...)
	cut := completeUTF8(buf)
	r.partial[kind] = append([]byte(nil), buf[cut:]...)
	if cut > 0 {
		r.add(kind, string(buf[:cut]))
	}
}

// resize records a terminal size change.
func (r *recorder) resize(width, height uint16) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f != nil && !r.full {
		r.add("r", fmt.Sprintf("%dx%d", width, height))
	}
}

// add writes one event; past the size limit it writes a marker instead and stops.
func (r *recorder) add(kind, data string) {
	t := time.Since(r.start).Seconds()
	line, err := marshalLine([]any{json.Number(strconv.FormatFloat(t, 'f', 6, 64)), kind, data})
	if err != nil {
		return
	}
	if r.written+int64(len(line)) > r.max {
		r.full = true
		line, _ = marshalLine([]any{json.Number(strconv.FormatFloat(t, 'f', 6, 64)), "m", "recording stopped: size limit reached"})
	}
	if err := r.write(line); err != nil {
		r.full = true
	}
}

func (r *recorder) write(line []byte) error {
	n, err := r.f.Write(line)
	r.written += int64(n)
	return err
}

// close flushes held-back bytes and closes the file.
func (r *recorder) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	for _, kind := range []string{"o", "i"} {
		if rest := r.partial[kind]; len(rest) > 0 && !r.full {
			r.add(kind, string(rest))
		}
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// marshalLine encodes v as one line of JSON, without HTML escaping.
func marshalLine(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// completeUTF8 returns how much of b ends on a whole UTF-8 sequence: an incomplete sequence at
// the end (cut by a read boundary) is left for the next chunk.
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			break
		}
	}
	return len(b)
}
