package sshd

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pkg/sftp"
)

// ServeSFTP serves the SFTP protocol on rw against the local filesystem, as the calling user,
// starting in their home directory, until the client closes rw. `meshctl sftp-server` runs it
// inside a workspace with stdin and stdout as rw; the sftp subsystem splices a client to it.
func ServeSFTP(rw io.ReadWriteCloser) error {
	var opts []sftp.ServerOption
	if home, err := os.UserHomeDir(); err == nil {
		opts = append(opts, sftp.WithServerWorkingDirectory(home))
	}
	srv, err := sftp.NewServer(rw, opts...)
	if err != nil {
		return fmt.Errorf("sftp-server: %w", err)
	}
	defer srv.Close()
	if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("sftp-server: %w", err)
	}
	return nil
}
