// Command mkimage builds a busybox OCI image-layout tarball with extra files, offline:
//
//	go run ./scripts/mkimage -o dev.tar -ref meshwork.dev/dev:1 [-add SRC:DEST]... [-cmd 'sh -c ...']
//
// The output imports with `ctr images import` or ctrd.Runtime.Import.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"meshwork.dev/workspace/image"
)

type adds []string

func (a *adds) String() string     { return strings.Join(*a, ",") }
func (a *adds) Set(v string) error { *a = append(*a, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fl := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	out := fl.String("o", "", "output tarball (required)")
	ref := fl.String("ref", "meshwork.dev/dev:1", "image name")
	cmd := fl.String("cmd", "", "command, run by sh -c (default: none; the runtime idles)")
	var extra adds
	fl.Var(&extra, "add", "SRC:DEST: add file SRC at DEST in the image (repeatable)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("-o is required: name the tarball to write")
	}
	files, err := image.Busybox()
	if err != nil {
		return err
	}
	for _, a := range extra {
		f, err := readAdd(a)
		if err != nil {
			return err
		}
		files = append(files, f)
	}
	var cfg image.Config
	if *cmd != "" {
		cfg.Cmd = []string{"/bin/sh", "-c", *cmd}
	}
	cfg.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
	var buf bytes.Buffer
	if err := image.Build(&buf, *ref, files, cfg); err != nil {
		return err
	}
	return os.WriteFile(*out, buf.Bytes(), 0o644)
}

func readAdd(a string) (image.File, error) {
	src, dest, ok := strings.Cut(a, ":")
	if !ok || src == "" || !strings.HasPrefix(dest, "/") {
		return image.File{}, fmt.Errorf("-add %q: want SRC:/absolute/dest", a)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return image.File{}, fmt.Errorf("-add %q: %w", a, err)
	}
	mode := fs.FileMode(0o644)
	if st, err := os.Stat(src); err == nil {
		mode = st.Mode().Perm()
	}
	return image.File{Path: dest, Mode: mode, Data: data}, nil
}
