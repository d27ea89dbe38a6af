package ctrd

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"meshwork.dev/workspace/wsexec"
)

func TestWithUser(t *testing.T) {
	u := userAccount("alice", "/bin/bash")
	tests := []struct {
		name, in string
		group    bool
		want     string
	}{
		{"no file", "", false, rootPasswd + "alice:x:1000:1000::/home/alice:/bin/bash\n"},
		{"no group file", "\n", true, rootGroup + "alice:x:1000:\n"},
		{"kept, newline added", "root:x:0:0:root:/root:/bin/sh\n# comment\nnobody:x:65534:65534::/:/bin/false", false,
			"root:x:0:0:root:/root:/bin/sh\n# comment\nnobody:x:65534:65534::/:/bin/false\nalice:x:1000:1000::/home/alice:/bin/bash\n"},
		{"same name and uid replaced", "root:x:0:0::/root:/bin/sh\nalice:x:1001:1001::/a:/bin/sh\nubuntu:x:1000:1000::/home/ubuntu:/bin/bash\n", false,
			"root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/bash\n"},
		{"same group name and gid replaced", "root:x:0:\nalice:x:5:\nubuntu:x:1000:\nusers:x:100:alice\n", true,
			"root:x:0:\nusers:x:100:alice\nalice:x:1000:\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, withUser(tt.in, u, tt.group)); diff != "" {
				t.Errorf("withUser (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLookupPasswd(t *testing.T) {
	file := "root:x:0:0:root:/root:/bin/ash\nbad:x:zero:0::/:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/bash\n"
	tests := []struct {
		name string
		want account
		ok   bool
	}{
		{"root", account{Name: "root", Home: "/root", Shell: "/bin/ash"}, true},
		{"alice", account{Name: "alice", UID: 1000, GID: 1000, Home: "/home/alice", Shell: "/bin/bash"}, true},
		{"bad", account{}, false},
		{"bob", account{}, false},
	}
	for _, tt := range tests {
		got, ok := lookupPasswd(file, tt.name)
		if ok != tt.ok || got != tt.want {
			t.Errorf("lookupPasswd(%q) = %+v, %v; want %+v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzWithUser: whatever the image's file, the result names the user exactly once, with our
// ids, and the lookup finds our line.
func FuzzWithUser(f *testing.F) {
	f.Add("root:x:0:0:root:/root:/bin/sh\n")
	f.Add("alice:x:1000:1000::/x:/bin/sh\nalice:x:1000")
	f.Fuzz(func(t *testing.T, file string) {
		u := userAccount("alice", "/bin/sh")
		out := withUser(file, u, false)
		if !strings.HasSuffix(out, "\n") {
			t.Fatalf("no final newline: %q", out)
		}
		n := 0
		for l := range strings.Lines(out) {
			if strings.HasPrefix(l, "alice:") {
				n++
			}
		}
		if got, ok := lookupPasswd(out, "alice"); n != 1 || !ok || got != u {
			t.Fatalf("%d alice lines, lookup %+v %v in %q", n, got, ok, out)
		}
	})
}

func TestProcessSpec(t *testing.T) {
	base := &specs.Process{
		Args: []string{"/usr/local/bin/wsecho"},
		Env:  []string{"PATH=/bin", "HOME=/home/alice", "USER=alice", "LANG=C"},
		Cwd:  "/",
		User: specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{0, 10}},
		Capabilities: &specs.LinuxCapabilities{
			Bounding: []string{"CAP_CHOWN"}, Effective: []string{"CAP_CHOWN"}, Permitted: []string{"CAP_CHOWN"},
		},
	}
	alice := userAccount("alice", "/bin/bash")
	root := account{Name: "root", Home: "/root", Shell: "/bin/sh"}
	tests := []struct {
		name string
		a    account
		s    wsexec.Spec
		want *specs.Process
	}{
		{"user login shell", alice, wsexec.Spec{}, &specs.Process{
			Args:         []string{"/bin/bash", "-l"},
			Env:          []string{"PATH=/bin", "HOME=/home/alice", "USER=alice", "LANG=C", "LOGNAME=alice", "SHELL=/bin/bash"},
			Cwd:          "/home/alice",
			User:         specs.User{UID: 1000, GID: 1000},
			Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_CHOWN"}},
		}},
		{"root tty", root, wsexec.Spec{Args: []string{"top"}, TTY: true, Width: 80, Height: 24, Env: []string{"TERM=vt100", "LANG=en_US.UTF-8"}, Dir: "/tmp"}, &specs.Process{
			Terminal:     true,
			ConsoleSize:  &specs.Box{Width: 80, Height: 24},
			Args:         []string{"top"},
			Env:          []string{"PATH=/bin", "HOME=/root", "USER=root", "LANG=en_US.UTF-8", "LOGNAME=root", "SHELL=/bin/sh", "TERM=vt100"},
			Cwd:          "/tmp",
			User:         specs.User{AdditionalGids: []uint32{0, 10}},
			Capabilities: base.Capabilities,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, processSpec(base, tt.a, tt.s)); diff != "" {
				t.Errorf("processSpec (-want +got):\n%s", diff)
			}
		})
	}
	if base.Env[1] != "HOME=/home/alice" || len(base.Env) != 4 {
		t.Errorf("processSpec changed the container's env: %q", base.Env)
	}
}
