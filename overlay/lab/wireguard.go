package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// WireGuardGo returns stock wireguard-go — golang.zx2c4.com/wireguard at go.mod's version, the
// module the egress tunnel links — built into bin/stock at the top of this tree on first use:
// the baseline of the mesh throughput bench and the exits of the egress tests.
func WireGuardGo(t TB) string {
	_, file, _, _ := runtime.Caller(0)
	here := filepath.Dir(file)
	path := filepath.Join(here, "..", "..", "bin", "stock", "wireguard")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	cmd := exec.Command("go", "build", "-o", path, "golang.zx2c4.com/wireguard")
	cmd.Dir = here
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building wireguard-go: %v\n%s", err, out)
	}
	return path
}
