package ctl

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"meshwork.dev/overlay/lab"
	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/image"
	"meshwork.dev/workspace/image/samples"
	"meshwork.dev/workspace/wsexec"
)

// The images of the environment tests (issue 17), built offline from this machine's Debian
// packages (scripts/deps.sh installs them) and imported by importEnvImages.
const (
	// redisImage runs Debian's redis-server with its data in /data (samples.Redis).
	redisImage = "meshwork.dev/redis:7"
	// envapiImage runs scripts/envapi (static) from /bin, so `envapi -migrate` is a command
	// a compose file can give; busybox is in it (`wget -qO- localhost:8080/healthz`).
	envapiImage = "meshwork.dev/envapi:1"
	// whoamiImage runs scripts/whoami (static) from /bin: a server answering with its name
	// (the hostname, so in a workspace the workspace's) on :3000, or with -client a caller.
	whoamiImage = "meshwork.dev/whoami:1"
	// envdevImage is the workspace image make run's dev is (samples.Dev): redis-cli, curl.
	envdevImage = "meshwork.dev/envdev:1"
)

var envImagesOnce sync.Map // containerd namespace → func() error, the import into it

// importEnvImages builds redisImage, envapiImage, whoamiImage and envdevImage and imports them into the
// project's containerd in namespace ns ("" is the agents' default), once per test binary and
// namespace. Without containerd or the Debian packages the test skips, saying what to run.
func importEnvImages(t testing.TB, ns string) {
	t.Helper()
	if _, err := os.Stat(ctrd.DefaultAddress); err != nil {
		t.Skipf("containerd is not running at %s (run scripts/deps.sh)", ctrd.DefaultAddress)
	}
	for _, bin := range []string{"/usr/bin/redis-server", "/usr/bin/redis-cli", "/usr/bin/curl"} {
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("no %s to pack into the environment images (run scripts/deps.sh)", bin)
		}
	}
	v, _ := envImagesOnce.LoadOrStore(ns, sync.OnceValue(func() error { return buildEnvImages(ns) }))
	if err := v.(func() error)(); err != nil {
		t.Fatal(err)
	}
}

func buildEnvImages(ns string) error {
	dir, err := os.MkdirTemp("", "envimages")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rt := &ctrd.Runtime{Namespace: ns, Machine: "lab-import", Identity: "lab-import", Dir: dir}
	defer rt.Close()
	for _, build := range []func(dir string) (string, []image.File, image.Config, error){redisFiles, envapiFiles, whoamiFiles, envdevFiles} {
		ref, files, cfg, err := build(dir)
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		var tar bytes.Buffer
		if err := image.Build(&tar, ref, files, cfg); err != nil {
			return err
		}
		if _, err := rt.Import(context.Background(), &tar); err != nil {
			return fmt.Errorf("importing %s: %w", ref, err)
		}
	}
	return nil
}

func redisFiles(string) (string, []image.File, image.Config, error) {
	files, cfg, err := samples.Redis()
	return redisImage, files, cfg, err
}

func envapiFiles(dir string) (string, []image.File, image.Config, error) {
	return goImage(dir, envapiImage, "meshwork.dev/scripts/envapi", []string{"envapi"})
}

func whoamiFiles(dir string) (string, []image.File, image.Config, error) {
	return goImage(dir, whoamiImage, "meshwork.dev/scripts/whoami", []string{"whoami"})
}

// goImage is busybox with the Go program pkg, built static, as /bin/<its name>, running cmd.
func goImage(dir, ref, pkg string, cmd []string) (string, []image.File, image.Config, error) {
	files, err := image.Busybox()
	if err != nil {
		return ref, nil, image.Config{}, err
	}
	bin, err := goBuild(dir, pkg)
	if err != nil {
		return ref, nil, image.Config{}, err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return ref, nil, image.Config{}, err
	}
	files = image.Merge(files, []image.File{{Path: "/bin/" + filepath.Base(bin), Mode: 0o755, Data: data}}) // over busybox's applet of that name
	return ref, files, image.Config{Cmd: cmd, Env: []string{samples.Path}}, nil
}

func envdevFiles(string) (string, []image.File, image.Config, error) {
	files, cfg, err := samples.Dev()
	return envdevImage, files, cfg, err
}

// TestEnvImages: in the redis image redis-server starts, keeping its data in /data, and
// redis-cli answers PONG; envapi's migration, run in its image, writes the greeting into that
// Redis across containers; in the workspace image curl runs and redis-cli reads it back.
func TestEnvImages(t *testing.T) {
	const ns = "imgd-envimages"
	importEnvImages(t, ns)
	h := lab.New(t).Host("imgd")
	suffix := randSuffix()
	rt := &ctrd.Runtime{Namespace: ns, Machine: "imgd-wm-" + suffix, Identity: "imgd-id-" + suffix, Dir: t.TempDir(), StopGrace: time.Second, Logf: t.Logf}
	t.Cleanup(func() { rt.Close() })
	redis := runImage(t, h, rt, "imgd-redis", redisImage, 21)
	api := runImage(t, h, rt, "imgd-api", envapiImage, 22)
	dev := runImage(t, h, rt, "imgd-dev", envdevImage, 23)

	eventually(t, 20*time.Second, "redis-cli ping in the redis image", func() error {
		return wantOutput(t, rt, redis, "PONG\n", "redis-cli", "ping")
	})
	out, err := wsOutput(t, rt, api, "envapi", "-migrate", "-redis", redis.IPv4.String()+":6379", "-wait", "10s")
	if err != nil || !strings.Contains(out, `set greeting to "hello from redis"`) {
		t.Errorf("envapi -migrate in its image: %v, %q", err, out)
	}
	if err := wantOutput(t, rt, dev, "hello from redis\n", "redis-cli", "-h", redis.IPv4.String(), "get", "greeting"); err != nil {
		t.Errorf("redis-cli in the workspace image: %v", err)
	}
	if out, err := wsOutput(t, rt, redis, "ls", "/data"); err != nil || !strings.Contains(out, "appendonlydir") {
		t.Errorf("redis data in /data: %v, %q", err, out)
	}
	if out, err := wsOutput(t, rt, dev, "curl", "--version"); err != nil || !strings.HasPrefix(out, "curl ") {
		t.Errorf("curl --version in the workspace image: %v, %q", err, out)
	}
}

func randSuffix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// runImage runs ref as a workspace of rt on lab host h, with mesh address 100.64.0.host, and
// deletes it when the test ends.
func runImage(t *testing.T, h *lab.Host, rt *ctrd.Runtime, name, ref string, host byte) ctrd.Spec {
	t.Helper()
	s := ctrd.Spec{
		ID: name + "-" + randSuffix(), Name: name, User: "imgd", Image: ref,
		IPv4: netip.AddrFrom4([4]byte{100, 64, 0, host}),
		IPv6: netip.MustParseAddr(fmt.Sprintf("fd7a:115c:a1e0::%d", host)),
	}
	t.Cleanup(func() {
		if err := h.Do(func() error { return rt.Delete(context.Background(), s.Name) }); err != nil {
			t.Errorf("cleanup of %s: %v", s.Name, err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var st ctrd.Status
	if err := h.Do(func() (err error) { st, err = rt.Run(ctx, s, nil); return err }); err != nil {
		t.Fatalf("running %s: %v", ref, err)
	}
	if st.State != ctrd.StateRunning {
		t.Fatalf("running %s: %+v", ref, st)
	}
	return s
}

// wsOutput runs args in workspace s, as root in the service images and as the workspace user
// in envdevImage, and returns what they print; a non-zero exit is an error.
func wsOutput(t *testing.T, rt *ctrd.Runtime, s ctrd.Spec, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	p, err := rt.Exec(ctx, s.Name, wsexec.Spec{Args: args, Root: s.Image != envdevImage, Stdout: &out, Stderr: &out})
	if err != nil {
		return "", err
	}
	code, err := p.Wait()
	if err == nil && code != 0 {
		err = fmt.Errorf("exit %d", code)
	}
	if err != nil {
		return out.String(), fmt.Errorf("%s in %s: %w: %s", strings.Join(args, " "), s.Image, err, out.Bytes())
	}
	return out.String(), nil
}

// wantOutput runs args in s and fails unless they exit 0 printing want.
func wantOutput(t *testing.T, rt *ctrd.Runtime, s ctrd.Spec, want string, args ...string) error {
	t.Helper()
	out, err := wsOutput(t, rt, s, args...)
	if err == nil && out != want {
		err = fmt.Errorf("%s in %s printed %q, want %q", strings.Join(args, " "), s.Image, out, want)
	}
	return err
}
