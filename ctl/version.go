package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
)

// Version is meshctl's version, set at build time by the Makefile
// (-ldflags "-X meshwork.dev/ctl.Version=...").
var Version = "dev"

var versionCmd = &command{
	name:     "version",
	summary:  "Print meshctl's version",
	usage:    "[--json]",
	examples: []string{"meshctl version", "meshctl version --json"},
	run:      runVersion,
}

type versionInfo struct {
	Version string `json:"version"`
	Go      string `json:"go"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
}

func runVersion(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("version: takes no arguments")
	}
	v := versionInfo{Version, runtime.Version(), runtime.GOOS, runtime.GOARCH}
	if e.global.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err := fmt.Fprintf(e.stdout, "meshctl %s (%s %s/%s)\n", v.Version, v.Go, v.OS, v.Arch)
	return err
}
