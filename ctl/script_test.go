package ctl

import (
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain puts this test binary on $PATH as "meshctl" (running Main), for the scripts and
// for the lab tests, which start it inside lab hosts.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"meshctl": Main})
}

// TestScript pins meshctl's command-line behaviour with the files in testdata/script.
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script"})
}
