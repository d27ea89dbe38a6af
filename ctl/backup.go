package ctl

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// bulkHTTP carries whole backups (hundreds of MiB): the API client's 30 s is for requests.
var bulkHTTP = &http.Client{Timeout: 15 * time.Minute}

var backupCmd = group("backup", "Save or restore the whole cluster state",
	&command{name: "save", summary: "Write a consistent snapshot of the state to FILE", usage: "FILE",
		examples: []string{"meshctl backup save meshwork.backup"}, run: backupSave},
	&command{name: "restore", summary: "Replace the state of every replica with FILE's (the audit log stays, with the restore in it; nodes get the restored map)", usage: "FILE",
		examples: []string{"meshctl backup restore meshwork.backup"}, run: backupRestore},
)

func backupSave(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	c.HTTP = bulkHTTP
	path := fs.Arg(0)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".backup-*")
	if err != nil {
		return fmt.Errorf("backup save: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := c.Do(ctx, "GET", "/v1/backup", nil, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("backup save: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("backup save: %w", err)
	}
	return e.printf("saved the cluster state to %s\n", path)
}

func backupRestore(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("backup restore: %w", err)
	}
	defer f.Close()
	c, err := e.client()
	if err != nil {
		return err
	}
	c.HTTP = bulkHTTP
	if err := c.Stream(ctx, "PUT", "/v1/backup", f, nil); err != nil {
		return fmt.Errorf("backup restore %s: %w (the state is unchanged)", fs.Arg(0), err)
	}
	return e.printf("restored the cluster state from %s\n", fs.Arg(0))
}
