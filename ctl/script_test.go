package ctl

import (
	"context"
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets testscript run meshctl in-process as the "meshctl" command.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"meshctl": func() {
			err := Run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
			os.Exit(ExitCode(err, os.Stderr))
		},
	})
}

// TestScript pins meshctl's command-line behaviour with the files in testdata/script.
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script"})
}
