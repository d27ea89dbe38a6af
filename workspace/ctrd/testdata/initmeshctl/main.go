// Command initmeshctl stands in for meshctl in the tools mount of TestServiceInit: it runs
// only "_init -- ARGS", as meshctl does (building all of meshctl takes most of a minute).
package main

import (
	"os"

	"meshwork.dev/workspace/reaper"
)

func main() {
	if len(os.Args) < 3 || os.Args[1] != "_init" || os.Args[2] != "--" {
		os.Exit(2)
	}
	os.Exit(reaper.Main(os.Args[3:]))
}
