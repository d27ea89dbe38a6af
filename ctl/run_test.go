package ctl

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestExitCodes(t *testing.T) {
	tests := []struct {
		args []string
		code int
	}{
		{[]string{"version"}, 0},
		{[]string{"--help"}, 0},
		{[]string{"version", "--help"}, 0},
		{[]string{"bogus"}, 2},
		{nil, 2},
		{[]string{"version", "--bogus"}, 2},
		{[]string{"help", "bogus"}, 2},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		err := Run(context.Background(), tt.args, strings.NewReader(""), &stdout, &stderr)
		if got := ExitCode(err, &stderr); got != tt.code {
			t.Errorf("meshctl %q: exit %d, want %d (stderr %q)", tt.args, got, tt.code, stderr.String())
		}
	}
}
