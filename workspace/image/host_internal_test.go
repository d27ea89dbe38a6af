package image

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseList(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n" +
		"\tlibselinux.so.1 => /lib/x86_64-linux-gnu/libselinux.so.1 (0x00007f8a)\n" +
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f8b)\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f8c)\n"
	libs, err := parseList([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/lib/x86_64-linux-gnu/libselinux.so.1", "/lib/x86_64-linux-gnu/libc.so.6"}
	if d := cmp.Diff(want, libs); d != "" {
		t.Errorf("libs (-want +got):\n%s", d)
	}
	_, err = parseList([]byte(out + "\tlibgone.so.3 => not found\n"))
	if err == nil || !strings.Contains(err.Error(), "libgone.so.3") {
		t.Errorf("a missing library: %v, want an error naming it", err)
	}
}
