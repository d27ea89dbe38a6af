package node

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestLockState: a state directory is held by one process at a time, which StatePID names,
// until it lets go.
func TestLockState(t *testing.T) {
	dir := t.TempDir()
	if pid := StatePID(dir); pid != 0 {
		t.Fatalf("a fresh directory is held by pid %d", pid)
	}
	l, err := LockState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pid := StatePID(dir); pid != os.Getpid() {
		t.Errorf("held: StatePID = %d, want %d", pid, os.Getpid())
	}
	want := fmt.Sprintf("another daemon (pid %d) is using %s", os.Getpid(), dir)
	if _, err := LockState(dir); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("second LockState: %v; want %q", err, want)
	}
	l.Close()
	if pid := StatePID(dir); pid != 0 {
		t.Errorf("let go: StatePID = %d, want 0", pid)
	}
	l, err = LockState(dir)
	if err != nil {
		t.Fatalf("after the first let go: %v", err)
	}
	l.Close()
}
