package ctl

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The repository-wide checks live here, beside the binary that imports everything.

// topLevel is everything allowed at the top of the tree (DESIGN.md's layout).
var topLevel = []string{
	"coord", "node", "overlay", "workspace", "policy", "ctl", "scripts",
	"go.mod", "go.sum", "Makefile", "README.md", "LICENSE", "bin",
}

// forbidden lists, per folder, the folders its packages must not import.
var forbidden = map[string][]string{
	"policy":    {"coord", "node", "ctl", "workspace"},
	"overlay":   {"coord", "node", "ctl"},
	"workspace": {"coord", "node", "ctl"},
	"node":      {"coord", "ctl"},
	"coord":     {"node", "ctl"},
}

const module = "meshwork.dev/"

// contracts are packages anyone may import across a forbidden line: wire types, not internals.
// node may import coord/api (the wire contract, as tailcfg is tailscale's) and nothing else of
// coord: TestNodeImportsOnlyCoordAPI pins that.
var contracts = []string{module + "coord/api"}

// TestNodeImportsOnlyCoordAPI: of coord, node (the tsnet node, the laptop daemon, the
// workmachine agent, the SSH server) imports the wire contract coord/api and nothing else.
func TestNodeImportsOnlyCoordAPI(t *testing.T) {
	for dir, files := range goPackages(t) {
		rel, _ := filepath.Rel("..", dir)
		if rel != "node" && !strings.HasPrefix(filepath.ToSlash(rel), "node/") {
			continue
		}
		for _, f := range files {
			_, imports := parseFile(t, f)
			for _, im := range imports {
				if strings.HasPrefix(im, module+"coord/") && im != module+"coord/api" || im == module+"coord" {
					t.Errorf("%s imports %s: node may import coord/api and nothing else of coord", f, im)
				}
			}
		}
	}
}

func TestTopLevelLayout(t *testing.T) {
	entries, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") && !slices.Contains(topLevel, e.Name()) {
			t.Errorf("%s at the top of the tree: DESIGN.md's layout has no place for it", e.Name())
		}
	}
}

// TestPackageDocs checks that every package opens with a doc comment saying what it is, and that
// no package imports across a forbidden line.
func TestPackageDocs(t *testing.T) {
	for dir, files := range goPackages(t) {
		documented := false
		for _, f := range files {
			doc, imports := parseFile(t, f)
			documented = documented || strings.HasPrefix(doc, "Package ") || strings.HasPrefix(doc, "Command ")
			checkImports(t, dir, f, imports)
		}
		if !documented {
			t.Errorf("%s: no package doc comment (// Package x is ...)", dir)
		}
	}
}

// goPackages maps each directory holding non-test Go files to those files.
func goPackages(t *testing.T) map[string][]string {
	pkgs := map[string][]string{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != ".." || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			dir := filepath.Dir(path)
			pkgs[dir] = append(pkgs[dir], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 3 {
		t.Fatalf("found only %d packages; is the walk broken?", len(pkgs))
	}
	return pkgs
}

func parseFile(t *testing.T, path string) (doc string, imports []string) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly|parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	if f.Doc != nil {
		doc = f.Doc.Text()
	}
	for _, im := range f.Imports {
		p, _ := strconv.Unquote(im.Path.Value)
		imports = append(imports, p)
	}
	return doc, imports
}

func checkImports(t *testing.T, dir, file string, imports []string) {
	rel, _ := filepath.Rel("..", dir)
	top := strings.Split(filepath.ToSlash(rel), "/")[0]
	if filepath.Base(filepath.Dir(file)) == "scripts" || top == "scripts" {
		return // scripts/bench has its own module
	}
	for _, im := range imports {
		if !strings.HasPrefix(im, module) {
			continue
		}
		target := strings.Split(strings.TrimPrefix(im, module), "/")[0]
		if slices.Contains(forbidden[top], target) && !slices.Contains(contracts, im) {
			t.Errorf("%s imports %s: %s/ must not depend on %s/", file, im, top, target)
		}
		if target == "ctl" && rel != "ctl/meshctl" {
			t.Errorf("%s imports %s: only the meshctl command imports ctl", file, im)
		}
	}
}
