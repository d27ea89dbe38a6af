package image

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
)

// BusyboxPath is where Debian's busybox-static installs its binary (scripts/deps.sh installs it).
const BusyboxPath = "/bin/busybox"

// fallbackApplets are linked when the binary cannot list its own applets.
var fallbackApplets = []string{
	"sh", "ash", "ls", "cat", "cp", "mv", "rm", "mkdir", "echo", "env", "id", "grep", "sed",
	"awk", "head", "tail", "wc", "sleep", "ps", "kill", "nc", "ping", "ping6", "wget", "httpd",
	"ip", "hostname", "nslookup", "mount", "touch", "true", "false", "test", "[", "vi", "tar",
}

// Busybox returns the files of a minimal Linux userland: the static busybox at BusyboxPath as
// /bin/busybox, a /bin symlink per applet, /etc/passwd and /etc/group with root (Accounts), /tmp
// and /root.
func Busybox() ([]File, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("busybox image: %w (install Debian's busybox-static: scripts/deps.sh)", err)
	}
	files := []File{
		{Path: "/bin/busybox", Mode: 0o755, Data: bin},
		{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Path: "/root", Mode: fs.ModeDir | 0o700},
		{Path: "/home", Mode: fs.ModeDir | 0o755},
	}
	files = append(files, Accounts()...)
	for _, a := range applets() {
		if a != "busybox" {
			files = append(files, File{Path: "/bin/" + a, Link: "busybox"})
		}
	}
	return files, nil
}

// A User is an account of an image: a line of /etc/passwd, and a group of the same name and id
// in /etc/group.
type User struct {
	Name     string
	UID, GID int
	Home     string // default /nonexistent
	Shell    string // default /bin/false
}

// Accounts returns /etc/passwd and /etc/group holding root, nobody and users. Merge them after
// Busybox to replace its pair.
func Accounts(users ...User) []File {
	passwd := "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	group := "root:x:0:\nnogroup:x:65534:\n"
	for _, u := range users {
		home, shell := cmpOr(u.Home, "/nonexistent"), cmpOr(u.Shell, "/bin/false")
		passwd += fmt.Sprintf("%s:x:%d:%d:%s:%s:%s\n", u.Name, u.UID, u.GID, u.Name, home, shell)
		group += fmt.Sprintf("%s:x:%d:\n", u.Name, u.GID)
	}
	return []File{
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte(passwd)},
		{Path: "/etc/group", Mode: 0o644, Data: []byte(group)},
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// applets lists the applets the installed busybox was built with.
func applets() []string {
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return fallbackApplets
	}
	var list []string
	for _, a := range strings.Fields(string(out)) {
		if !strings.Contains(a, "/") {
			list = append(list, a)
		}
	}
	return list
}
