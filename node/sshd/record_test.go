package sshd

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cast is a parsed asciicast v2 file.
type cast struct {
	header castHeader
	events [][3]any // time, kind, data
}

func readCast(t *testing.T, path string) cast {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, _ := f.Stat(); fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	var c cast
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for i := 0; sc.Scan(); i++ {
		if i == 0 {
			if err := json.Unmarshal(sc.Bytes(), &c.header); err != nil {
				t.Fatalf("header: %v", err)
			}
			continue
		}
		var ev [3]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %d %q: %v", i+1, sc.Text(), err)
		}
		if _, ok := ev[0].(float64); !ok {
			t.Fatalf("line %d: time %v is not a number", i+1, ev[0])
		}
		c.events = append(c.events, ev)
	}
	return c
}

// stream joins the data of every event of kind.
func (c cast) stream(kind string) string {
	var b strings.Builder
	for _, ev := range c.events {
		if ev[1] == kind {
			b.WriteString(ev[2].(string))
		}
	}
	return b.String()
}

func TestRecorderKeepsUTF8AcrossChunks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.cast")
	r, err := newRecorder(path, 1<<20, 80, 24, "xterm", "dev@ws", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	snow := []byte("a☃b") // ☃ is three bytes
	r.event("o", snow[:2])
	r.event("o", snow[2:])
	r.event("i", []byte("\xe2\x98")) // cut short at the end of the session
	if err := r.close(); err != nil {
		t.Fatal(err)
	}
	c := readCast(t, path)
	if got := c.stream("o"); got != "a☃b" {
		t.Errorf("output %q, want %q", got, "a☃b")
	}
	for _, ev := range c.events {
		if ev[1] == "o" && strings.ContainsRune(ev[2].(string), '\uFFFD') {
			t.Errorf("event %q split a character", ev[2])
		}
	}
	if c.header.Width != 80 || c.header.Height != 24 || c.header.Version != 2 {
		t.Errorf("header %+v", c.header)
	}
}

func TestRecorderStopsAtLimitWithMarker(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.cast")
	r, err := newRecorder(path, 2048, 80, 24, "xterm", "dev@ws", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		r.event("o", []byte(strings.Repeat("x", 100)))
	}
	r.close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 2048+200 {
		t.Errorf("recording is %d bytes, limit 2048", fi.Size())
	}
	c := readCast(t, path)
	last := c.events[len(c.events)-1]
	if last[1] != "m" || !strings.Contains(last[2].(string), "size limit") {
		t.Errorf("last event %v, want a size-limit marker", last)
	}
}
