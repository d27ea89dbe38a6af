package ctl

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/overlay/lab"
	"meshwork.dev/workspace/ctrd"
)

// shopCompose is the environment the lab runs: Redis (Debian's redis-server) with its data
// in a named volume and a healthcheck; a one-shot migration that waits for Redis to be
// healthy; and an API that waits for the migration to finish, reads Redis by its bare name
// and holds a secret. The start order is checked by the services themselves: Redis listens
// only two seconds after its container starts, and the migration gives up after one second
// without it; the API's first step fails unless the migration's key is already in Redis. A
// start out of order fails env create.
const shopCompose = `services:
  redis:
    image: ` + redisImage + `
    command: ["sh", "-c", "sleep 2; exec redis-server --save '1 1' --appendonly yes --dir /data --protected-mode no"]
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 500ms
      timeout: 2s
      retries: 60
    restart: always
  migrate:
    image: ` + envapiImage + `
    command: ["envapi", "-migrate", "-wait", "1s"]
    depends_on:
      redis: {condition: service_healthy}
  api:
    image: ` + envapiImage + `
    command: ["sh", "-c", "printf 'GET greeting\\r\\n' | nc -w 2 redis 6379 | grep -q hello || exit 3; exec envapi"]
    ports: ["8080"]
    depends_on:
      migrate: {condition: service_completed_successfully}
    secrets: [api_token]
secrets:
  api_token:
    environment: API_TOKEN
volumes:
  data: {}
`

// ctlAs runs meshctl on the admin host against coord as the holder of token, with extra
// environment variables.
func (ml *meshLab) ctlAs(token string, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := ml.admin.Command(ctx, ml.meshctl, args...)
	cmd.Env = append(append(os.Environ(), "MESHCTL_COORD="+ml.coord.url(), "MESHCTL_TOKEN="+token), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("meshctl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// member makes a member user with an API key, and a laptop of theirs on the mesh.
func (ml *meshLab) member(t testing.TB, name string) (token string, lp *laptop) {
	t.Helper()
	ml.mustCtl(ml.coord, "user", "create", name)
	var k api.NewAPIKey
	if err := json.Unmarshal([]byte(ml.mustCtl(ml.coord, "apikey", "create", "--user", name, "--json")), &k); err != nil {
		t.Fatal(err)
	}
	out, err := ml.ctlAs(k.Key, nil, "authkey", "create", "--reusable", "--json")
	var ak api.NewAuthKey
	if err == nil {
		err = json.Unmarshal([]byte(out), &ak)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k.Key, ml.laptopWith(t, name+"-lp", ml.in.PublicHost(name+"-lp"), ml.coord.url(), ak.Key)
}

// envStatus is `meshctl env status NAME --json`.
func (ml *meshLab) envStatus(t testing.TB, name string) api.Environment {
	t.Helper()
	var e api.Environment
	if err := json.Unmarshal([]byte(ml.mustCtl(ml.coord, "env", "status", name, "--json")), &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func service(t testing.TB, e api.Environment, name string) api.Service {
	t.Helper()
	for _, s := range e.Services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("environment %s has no service %s: %+v", e.Name, name, e.Services)
	return api.Service{}
}

// servicePID is the init process of a running service on wm.
func (wm *workmachine) servicePID(t testing.TB, env, name string) int {
	t.Helper()
	var pid int
	eventually(t, 30*time.Second, env+"/"+name+" running on "+wm.name, func() error {
		l, err := wm.runtime(t).ListServices(context.Background())
		for _, s := range l {
			if s.Env == env && s.Name == name && s.State == ctrd.StateRunning && s.PID > 0 {
				pid = s.PID
				return nil
			}
		}
		return fmt.Errorf("not running: %+v %v", l, err)
	})
	return pid
}

// redisPing sends PING to the Redis at addr from h.
func redisPing(h *lab.Host, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := h.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err == nil && string(buf[:n]) != "+PONG\r\n" {
		err = fmt.Errorf("read %q", buf[:n])
	}
	return err
}

// grepTree reports the files under dir that hold secret.
func grepTree(dir string, secret []byte) []string {
	var hits []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, secret) {
			hits = append(hits, path)
		}
		return nil
	})
	return hits
}

// TestEnvironments: a compose file of Redis, a migration job and an API becomes running
// services on wm1, started in dependency order. A workspace on wm2 connected to it reaches
// them by bare name (redis-cli, curl) and loses them when disconnected; the owner's laptop
// reaches them, another member's does not. Redis's data survives down/up, the agent's death
// and the container's, and goes with env delete. An update recreates only what changed. The
// secret is in /run/secrets in the service and nowhere else. Bad input is refused and changes
// nothing. With coord down, what runs keeps running.
func TestEnvironments(t *testing.T) {
	importEnvImages(t, "")
	ml := newMeshLab(t)
	wm1, wm2 := ml.workmachine(t, "ewm1"), ml.workmachine(t, "ewm2")
	owner := ml.laptop(t, "elp", ml.in.PublicHost("elp")) // the admin's: the environment's owner
	bobToken, bob := ml.member(t, "bob")
	dir := t.TempDir()
	file := filepath.Join(dir, "compose.yaml")
	if err := os.WriteFile(file, []byte(shopCompose), 0o644); err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 12)
	rand.Read(secret)
	token := "tok-" + hex.EncodeToString(secret)
	withToken := []string{"API_TOKEN=" + token}

	start := time.Now()
	out, err := ml.ctlAs(ml.token, withToken, "env", "create", "shop", "-f", file, "--machine", "ewm1")
	t.Logf("env create shop → every service ready in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"redis: healthy", "migrate: exited 0", "api: running"} {
		if !strings.Contains(out, want) {
			t.Errorf("env create's progress lacks %q", want)
		}
	}
	shop := ml.envStatus(t, "shop")
	for _, s := range shop.Services {
		if !s.Ready() {
			t.Errorf("after env create: %s is %s/%s", s.Name, s.State, s.Health)
		}
	}
	redis, apiSvc := service(t, shop, "redis"), service(t, shop, "api")
	if redis.DNSName != "redis.shop.mesh.internal" || redis.IPv4 == "" || redis.IPv6 == "" {
		t.Errorf("redis: name %q, addresses %q %q", redis.DNSName, redis.IPv4, redis.IPv6)
	}
	if out, err := owner.meshctl(t, ml.meshctl, "--coord", ml.coord.url(), "--token", ml.token, "env", "logs", "shop", "migrate"); err != nil || !strings.Contains(out, "set greeting") {
		t.Errorf("migrate's log: %q %v", out, err)
	}

	// A workspace on the other machine, connected: bare names resolve and answer.
	t.Logf("%v: connect", time.Since(start).Round(time.Millisecond))
	ml.mustCtl(ml.coord, "ws", "create", "dev", "--machine", "ewm2", "--image", envdevImage)
	dev := wm2.pid(t, "dev")
	ml.mustCtl(ml.coord, "env", "connect", "dev", "shop")
	eventually(t, 30*time.Second, "redis-cli -h redis ping in dev", func() error {
		out, err := inside(dev, "redis-cli", "-h", "redis", "ping")
		if err == nil && out != "PONG\n" {
			err = fmt.Errorf("read %q", out)
		}
		return err
	})
	if out, err := inside(dev, "curl", "-sS", "--max-time", "5", "http://api:8080/"); err != nil || !strings.Contains(out, "hello from redis") {
		t.Errorf("curl http://api:8080/ in dev: %q %v", out, err)
	}
	if l := ml.mustCtl(ml.coord, "ws", "list"); !strings.Contains(l, "shop") {
		t.Errorf("ws list does not show dev's connection:\n%s", l)
	}
	// Inside the workspace, meshctl needs no key.
	if out, err := inside(dev, ctrd.ToolsPath+"/meshctl", "status"); err != nil || !strings.Contains(out, "environment: shop") {
		t.Errorf("meshctl status in dev: %q %v", out, err)
	}
	if out, err := inside(dev, ctrd.ToolsPath+"/meshctl", "env", "status", "shop"); err != nil || !strings.Contains(out, "healthy") {
		t.Errorf("meshctl env status in dev: %q %v", out, err)
	}

	// The owner's laptop reaches redis; another member's does not.
	t.Logf("%v: reach", time.Since(start).Round(time.Millisecond))
	eventually(t, 30*time.Second, "the owner's laptop → redis", func() error { return redisPing(owner.host, redis.IPv4+":6379") })
	if err := redisPing(bob.host, redis.IPv4+":6379"); err == nil {
		t.Errorf("bob's laptop reached shop's redis")
	}

	// Data survives env down + up, the agent's death and the container's.
	t.Logf("%v: data", time.Since(start).Round(time.Millisecond))
	if out, err := inside(dev, "redis-cli", "-h", "redis", "set", "k", "kept"); err != nil || out != "OK\n" {
		t.Fatalf("set k: %q %v", out, err)
	}
	getK := func() error {
		out, err := inside(dev, "redis-cli", "-h", "redis", "get", "k")
		if err == nil && out != "kept\n" {
			err = fmt.Errorf("k is %q", out)
		}
		return err
	}
	ml.mustCtl(ml.coord, "env", "down", "shop")
	for _, s := range ml.envStatus(t, "shop").Services {
		if s.State != api.ServiceStopped && s.State != api.ServiceExited {
			t.Errorf("after env down: %s is %s", s.Name, s.State)
		}
	}
	ml.mustCtl(ml.coord, "env", "up", "shop")
	eventually(t, 30*time.Second, "k after env down + up", getK)

	redisPID := wm1.servicePID(t, "shop", "redis")
	wm1.proc.Kill()
	time.Sleep(time.Second)
	if err := syscall.Kill(redisPID, 0); err != nil {
		t.Fatalf("redis died with its agent: %v", err)
	}
	wm1.start(ml)
	eventually(t, 60*time.Second, "k after the agent's restart", getK)
	if again := wm1.servicePID(t, "shop", "redis"); again != redisPID {
		t.Errorf("the restarted agent restarted redis: pid %d, was %d", again, redisPID)
	}
	syscall.Kill(redisPID, syscall.SIGKILL)
	eventually(t, 60*time.Second, "redis restarted after its death", func() error {
		s := service(t, ml.envStatus(t, "shop"), "redis")
		if s.Restarts < 1 || !s.Ready() {
			return fmt.Errorf("redis %s/%s, %d restarts", s.State, s.Health, s.Restarts)
		}
		return getK()
	})

	// An update recreates only what changed (api gains a variable; redis keeps running), and
	// its wait ends once the machine has answered it.
	t.Logf("%v: update", time.Since(start).Round(time.Millisecond))
	redisPID, oldAPI := wm1.servicePID(t, "shop", "redis"), wm1.servicePID(t, "shop", "api")
	updated := strings.Replace(shopCompose, "    ports: [\"8080\"]\n", "    ports: [\"8080\"]\n    environment: {REVISION: \"2\"}\n", 1)
	if err := os.WriteFile(file, []byte(updated), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = ml.ctlAs(ml.token, withToken, "env", "update", "shop", "-f", file)
	if err != nil || !strings.Contains(out, "api: running") {
		t.Fatalf("env update: %v\n%s", err, out)
	}
	shop = ml.envStatus(t, "shop")
	for _, s := range shop.Services {
		if !s.Ready() || s.Generation != shop.Generation {
			t.Errorf("when env update returned: %s is %s/%s under generation %d, want ready under %d", s.Name, s.State, s.Health, s.Generation, shop.Generation)
		}
	}
	if again := wm1.servicePID(t, "shop", "redis"); again != redisPID {
		t.Errorf("env update restarted redis, whose definition did not change: pid %d, was %d", again, redisPID)
	}
	if wm1.servicePID(t, "shop", "api") == oldAPI {
		t.Errorf("env update did not recreate api, whose definition changed")
	}
	if err := getK(); err != nil {
		t.Errorf("k after env update: %v", err)
	}

	// The secret is in the API's /run/secrets, 0400, and nowhere else.
	t.Logf("%v: secret", time.Since(start).Round(time.Millisecond))
	apiPID := wm1.servicePID(t, "shop", "api")
	if out, err := inside(apiPID, "cat", "/run/secrets/api_token"); err != nil || out != token {
		t.Errorf("/run/secrets/api_token in api: %q %v", out, err)
	}
	if out, err := inside(apiPID, "stat", "-c", "%a", "/run/secrets/api_token"); err != nil || out != "400\n" {
		t.Errorf("/run/secrets/api_token's mode: %q %v", out, err)
	}
	backup := filepath.Join(dir, "backup")
	ml.mustCtl(ml.coord, "backup", "save", backup)
	answers := ""
	for _, args := range [][]string{{"env", "list", "--json"}, {"env", "status", "shop", "--json"}, {"ws", "list", "--json"}, {"audit", "--json"}} {
		answers += ml.mustCtl(ml.coord, args...)
	}
	if strings.Contains(answers, token) {
		t.Errorf("an API answer holds the secret")
	}
	for _, d := range []string{ml.coord.state, wm1.state, wm2.state, dir} {
		if hits := grepTree(d, []byte(token)); len(hits) > 0 {
			t.Errorf("the secret is in %v", hits)
		}
	}

	// Disconnected: the names stop resolving, the addresses stop answering.
	t.Logf("%v: disconnect", time.Since(start).Round(time.Millisecond))
	ml.mustCtl(ml.coord, "env", "disconnect", "dev")
	eventually(t, 30*time.Second, "redis unresolvable in dev", func() error {
		if out, err := inside(dev, "redis-cli", "-h", "redis", "ping"); err == nil {
			return fmt.Errorf("still answers: %q", out)
		}
		return nil
	})
	if out, err := inside(dev, "curl", "-sS", "--max-time", "3", "http://"+apiSvc.IPv4+":8080/"); err == nil {
		t.Errorf("dev reached api's address after env disconnect: %q", out)
	}

	// Bad input: each refused, nothing changed.
	t.Logf("%v: bad input", time.Since(start).Round(time.Millisecond))
	before := ml.mustCtl(ml.coord, "env", "list", "--json")
	bad := func(what, compose string, want string) {
		t.Helper()
		f := filepath.Join(dir, "bad.yaml")
		os.WriteFile(f, []byte(compose), 0o644)
		out, err := ml.ctlAs(ml.token, withToken, "env", "create", "bad", "-f", f, "--machine", "ewm1", "--timeout", "30s")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v\n%s; want an error with %q", what, err, out, want)
		}
	}
	bad("build", "services:\n  web:\n    build: .\n", "build")
	bad("broken YAML", "services:\n  web:\n    image: [\n", "line")
	bad("a host bind mount", "services:\n  web:\n    image: x\n    volumes: [\"/etc:/host\"]\n", "web")
	if out, err := ml.ctlAs(ml.token, withToken, "env", "create", "shop", "-f", file, "--machine", "ewm1"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("a second env create shop: %v\n%s", err, out)
	}
	if after := ml.mustCtl(ml.coord, "env", "list", "--json"); after != before {
		t.Errorf("refused creates changed the environments:\n%s\n%s", before, after)
	}
	if _, err := ml.ctlAs(bobToken, nil, "ws", "create", "bobs", "--machine", "ewm2", "--image", envdevImage); err != nil {
		t.Fatal(err)
	}
	if _, err := ml.ctlAs(bobToken, nil, "env", "connect", "bobs", "shop"); err == nil || !strings.Contains(err.Error(), "not yours") {
		t.Errorf("bob connecting to the admin's environment: %v, want 403", err)
	}
	// An image that cannot be had fails its service with the reason; the others run.
	ghost := "services:\n  ok:\n    image: " + redisImage + "\n  ghost:\n    image: " + ml.in.Addr.String() + "/no/such:image\n"
	bad("an unknown image", ghost, "ghost")
	eventually(t, 30*time.Second, "bad/ok running beside the failed ghost", func() error {
		e := ml.envStatus(t, "bad")
		if s := service(t, e, "ok"); !s.Ready() {
			return fmt.Errorf("ok is %s", s.State)
		}
		if s := service(t, e, "ghost"); s.State != api.ServiceFailed || s.Reason == "" {
			return fmt.Errorf("ghost is %s (%q)", s.State, s.Reason)
		}
		return nil
	})

	// env delete removes the data: a new shop starts empty.
	t.Logf("%v: delete", time.Since(start).Round(time.Millisecond))
	ml.mustCtl(ml.coord, "env", "delete", "shop")
	eventually(t, 30*time.Second, "shop's services gone from ewm1", func() error {
		l, err := wm1.runtime(t).ListServices(context.Background())
		for _, s := range l {
			if s.Env == "shop" {
				return fmt.Errorf("still there: %+v", s)
			}
		}
		return err
	})
	if _, err := ml.ctlAs(ml.token, withToken, "env", "create", "shop", "-f", file, "--machine", "ewm1"); err != nil {
		t.Fatal(err)
	}
	ml.mustCtl(ml.coord, "env", "connect", "dev", "shop")
	eventually(t, 30*time.Second, "k in the new shop", func() error {
		out, err := inside(dev, "redis-cli", "-h", "redis", "get", "k")
		if err == nil && out != "\n" {
			err = fmt.Errorf("k is %q in a new environment", out)
		}
		return err
	})

	if again := wm2.pid(t, "dev"); again != dev {
		t.Errorf("connecting, disconnecting and connecting again restarted dev: pid %d, was %d", again, dev)
	}

	// With coord down, what runs keeps running: dev still reaches redis across machines, and
	// redis still restarts after its death.
	t.Logf("%v: coord down", time.Since(start).Round(time.Millisecond))
	ml.coord.proc.Kill()
	if out, err := inside(dev, "redis-cli", "-h", "redis", "set", "k", "coordless"); err != nil || out != "OK\n" {
		t.Errorf("set k in dev with coord down: %q %v", out, err)
	}
	redisPID = wm1.servicePID(t, "shop", "redis")
	syscall.Kill(redisPID, syscall.SIGKILL)
	eventually(t, 60*time.Second, "redis restarted with coord down", func() error {
		if pid := wm1.servicePID(t, "shop", "redis"); pid == redisPID {
			return fmt.Errorf("still pid %d", pid)
		}
		out, err := inside(dev, "redis-cli", "-h", "redis", "get", "k")
		if err == nil && out != "coordless\n" {
			err = fmt.Errorf("k is %q", out)
		}
		return err
	})
}
