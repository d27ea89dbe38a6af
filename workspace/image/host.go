package image

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"strings"
)

// nsswitch makes glibc look users and groups up in /etc files and hosts in /etc/hosts then
// DNS, with the modules built into libc (glibc ≥ 2.34): no libnss_*.so to pack.
const nsswitch = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"

// HostBinaries returns what the programs of this machine at paths need to run in an image
// that holds nothing else: each program at its path, the dynamic loader at the path the
// program names (its ELF PT_INTERP), every shared library the loader resolves for it
// (transitively, the list `ldd` prints) at the path it resolves to, and /etc/nsswitch.conf.
// Symlinks are followed: each file is stored as a regular file with the mode of its target.
// A static program brings only itself. Combine the result with Busybox (or other files)
// through Merge.
func HostBinaries(paths ...string) ([]File, error) {
	seen := map[string]bool{}
	files := []File{{Path: "/etc/nsswitch.conf", Mode: 0o644, Data: []byte(nsswitch)}}
	add := func(p string) error {
		if seen[p] {
			return nil
		}
		seen[p] = true
		f, err := hostFile(p)
		if err == nil {
			files = append(files, f)
		}
		return err
	}
	for _, p := range paths {
		needs, err := sharedObjects(p)
		if err != nil {
			return nil, fmt.Errorf("pack %s: %w", p, err)
		}
		for _, q := range append([]string{p}, needs...) {
			if err := add(q); err != nil {
				return nil, fmt.Errorf("pack %s: %w", p, err)
			}
		}
	}
	return files, nil
}

// hostFile reads the host file at p (following symlinks) as a regular File at p.
func hostFile(p string) (File, error) {
	if !path.IsAbs(p) {
		return File{}, fmt.Errorf("%q is not an absolute path: give where the file is on this machine", p)
	}
	st, err := os.Stat(p)
	if err != nil {
		return File{}, err
	}
	if !st.Mode().IsRegular() {
		return File{}, fmt.Errorf("%s is not a regular file", p)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return File{}, err
	}
	return File{Path: p, Mode: st.Mode().Perm(), Data: data}, nil
}

// sharedObjects returns the loader and the libraries of the ELF program at p, as the paths
// the loader finds them at; nothing for a static program.
func sharedObjects(p string) ([]string, error) {
	interp, err := interpreter(p)
	if err != nil || interp == "" {
		return nil, err
	}
	// What ldd does: the loader maps the program's libraries, lists them and runs nothing.
	cmd := exec.Command(interp, "--list", p)
	cmd.Env = []string{"LC_ALL=C"}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w (is the program built for this machine?)", interp, err)
	}
	libs, err := parseList(out)
	if err != nil {
		return nil, err
	}
	return append([]string{interp}, libs...), nil
}

// interpreter returns the dynamic loader the ELF program at p names, "" for a static one.
func interpreter(p string) (string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("not an ELF program this machine can read: %w", err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(b, 0); err != nil {
			return "", fmt.Errorf("reading PT_INTERP: %w", err)
		}
		return string(bytes.TrimRight(b, "\x00")), nil
	}
	return "", nil
}

// parseList reads the loader's --list output: "name => /path (0x…)" per resolved library;
// the vDSO and the loader's own line carry no "=>" and are skipped.
func parseList(out []byte) ([]string, error) {
	var libs, missing []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		name, rest, ok := strings.Cut(strings.TrimSpace(sc.Text()), " => ")
		if !ok {
			continue
		}
		target, _, _ := strings.Cut(rest, " (")
		switch {
		case target == "not found":
			missing = append(missing, name)
		case path.IsAbs(target):
			libs = append(libs, target)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("libraries not found on this machine: %s (install the packages that hold them)", strings.Join(missing, ", "))
	}
	return libs, nil
}

// Merge joins lists of files into one for Build. A later entry for a path replaces an earlier
// one, as a later layer would (Accounts after Busybox gives the image your /etc/passwd).
func Merge(lists ...[]File) []File {
	var out []File
	at := map[string]int{}
	for _, list := range lists {
		for _, f := range list {
			p := path.Clean("/" + f.Path)
			if i, ok := at[p]; ok {
				out[i] = f
				continue
			}
			at[p] = len(out)
			out = append(out, f)
		}
	}
	return out
}
