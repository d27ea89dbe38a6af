package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"meshwork.dev/overlay/lab"
	"meshwork.dev/workspace/image"
)

// benchEnv is the environment (and Compose project) the bench runs: TestEnvironments' shop.
const benchEnv = "bzshop"

// BenchmarkEnvironment/up: `meshctl env up` of TestEnvironments' compose file (Redis
// healthy, the migration exited 0, the API running; images present, the environment created
// once and brought down) until it returns with every service ready, beside Docker Compose
// running the same file with the same images on the same machine (`docker-compose stop`,
// then `up -d` until the Docker API shows the same), alternating, p50 of at least 5 runs each
// (target ≤ 1.0×). BenchmarkEnvironment/latency: requests to the environment's services from
// a workspace on another workmachine (over the mesh) beside one on the environment's own
// machine, and from inside the environment. The figures are sub-benchmarks so that their
// lines are not lost among the lab's logs, which go to the parent's (truncated) output.
func BenchmarkEnvironment(b *testing.B) {
	importEnvImages(b, "")
	docker := startDockerd(b)
	ml := newMeshLab(b)
	wm1, wm2 := ml.workmachine(b, "bzwm1"), ml.workmachine(b, "bzwm2")
	dir := b.TempDir()
	file := filepath.Join(dir, "compose.yaml")
	if err := os.WriteFile(file, []byte(shopCompose), 0o644); err != nil {
		b.Fatal(err)
	}
	token := []string{"API_TOKEN=tok-bench"}
	if out, err := ml.ctlAs(ml.token, token, "env", "create", benchEnv, "-f", file, "--machine", "bzwm1"); err != nil {
		b.Fatalf("%v\n%s", err, out)
	}
	docker.project(b, dir, "tok-bench")
	docker.up(b) // creates the containers, network and volume: not timed, as env create is not
	b.Run("up", func(b *testing.B) { envUp(b, ml, docker) })

	ml.mustCtl(ml.coord, "env", "up", benchEnv)
	for ws, wm := range map[string]string{"bznear": "bzwm1", "bzfar": "bzwm2"} {
		ml.mustCtl(ml.coord, "ws", "create", ws, "--machine", wm, "--image", envdevImage)
		ml.mustCtl(ml.coord, "env", "connect", ws, benchEnv)
	}
	e := ml.envStatus(b, benchEnv)
	to := envTargets{api: service(b, e, "api").IPv4 + ":8080", redis: service(b, e, "redis").IPv4 + ":6379",
		near: wm1.pid(b, "bznear"), far: wm2.pid(b, "bzfar"), inEnv: wm1.servicePID(b, benchEnv, "api")}
	b.Run("latency", func(b *testing.B) { envLatency(b, to) })
}

// envUp times env up and docker-compose up, alternating, each from both sides stopped.
func envUp(b *testing.B, ml *meshLab, docker *dockerd) {
	runs := max(b.N, 5)
	var mesh, compose, returned []time.Duration
	for range runs {
		ml.mustCtl(ml.coord, "env", "down", benchEnv)
		docker.compose(b, "stop")
		start := time.Now()
		if out, err := ml.ctlAs(ml.token, nil, "env", "up", benchEnv); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		mesh = append(mesh, time.Since(start))
		ml.mustCtl(ml.coord, "env", "down", benchEnv)
		ready, took := docker.up(b)
		compose, returned = append(compose, ready), append(returned, took)
	}
	docker.compose(b, "stop")
	m50, _ := percentiles(mesh)
	c50, _ := percentiles(compose)
	r50, _ := percentiles(returned)
	b.ReportMetric(m50.Seconds(), "s-env-up-p50")
	b.ReportMetric(c50.Seconds(), "s-compose-p50")
	b.ReportMetric(m50.Seconds()/c50.Seconds(), "env-up/compose")
	b.Logf("env up → every service ready, %d runs: p50 %v %v; Docker Compose, same file and images: p50 %v %v "+
		"(docker-compose up -d returned after p50 %v); %.2f× (target ≤ 1.0×)",
		runs, m50.Round(time.Millisecond), rounded(mesh), c50.Round(time.Millisecond), rounded(compose), r50.Round(time.Millisecond),
		m50.Seconds()/c50.Seconds())
}

// envTargets are the services the latency bench calls, and the processes (by pid) whose
// network namespaces it calls them from: workspaces connected to the environment on its
// machine (near) and on the other (far), and the environment's API service.
type envTargets struct {
	api, redis       string
	near, far, inEnv int
}

// envLatency times HTTP requests to the API (which reads Redis for each) and Redis pings from
// the far and near workspaces, and Redis pings from the API service.
func envLatency(b *testing.B, to envTargets) {
	n := 300 * b.N
	farHTTP, nearHTTP := requests(b, to.far, to.api, httpGet, n), requests(b, to.near, to.api, httpGet, n)
	farPing, nearPing := requests(b, to.far, to.redis, redisPingConn, n), requests(b, to.near, to.redis, redisPingConn, n)
	envPing := requests(b, to.inEnv, to.redis, redisPingConn, n)
	f50, _ := percentiles(farHTTP)
	l50, _ := percentiles(nearHTTP)
	fp50, _ := percentiles(farPing)
	lp50, _ := percentiles(nearPing)
	ep50, _ := percentiles(envPing)
	b.ReportMetric(ms(f50), "ms-http-mesh-p50")
	b.ReportMetric(ms(l50), "ms-http-local-p50")
	b.ReportMetric(ms(fp50), "ms-redis-mesh-p50")
	b.ReportMetric(ms(lp50), "ms-redis-local-p50")
	b.Logf("GET http://api:8080/ (the API reads Redis), %d requests: from a workspace on the other workmachine over the mesh p50 %v, "+
		"from one on the same machine %v: %.1f× (+%v)", n, f50, l50, ms(f50)/ms(l50), f50-l50)
	b.Logf("redis PING, %d requests: over the mesh p50 %v, same machine %v: %.1f× (+%v); service → service inside the environment (api → redis) %v",
		n, fp50, lp50, ms(fp50)/ms(lp50), fp50-lp50, ep50)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// rounded is ds to the millisecond, for a log line.
func rounded(ds []time.Duration) []time.Duration {
	r := make([]time.Duration, len(ds))
	for i, d := range ds {
		r[i] = d.Round(time.Millisecond)
	}
	return r
}

// requests times n round trips of one request on a connection to addr made in the network
// namespace of pid, after 20 untimed ones; the first connection is retried for 30 s while
// an env connect takes effect.
func requests(b *testing.B, pid int, addr string, request func(*bufio.ReadWriter) error, n int) []time.Duration {
	var c net.Conn
	eventually(b, 30*time.Second, fmt.Sprintf("%s from pid %d", addr, pid), func() (err error) {
		if c, err = dialFrom(pid, addr); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err = request(bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))); err != nil {
				c.Close()
			}
		}
		return err
	})
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	rw := bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	times := make([]time.Duration, 0, n)
	for i := range n + 20 {
		start := time.Now()
		if err := request(rw); err != nil {
			b.Fatalf("request %d to %s from pid %d: %v", i, addr, pid, err)
		}
		if i >= 20 {
			times = append(times, time.Since(start))
		}
	}
	return times
}

// dialFrom connects to addr from inside the network namespace of pid.
func dialFrom(pid int, addr string) (net.Conn, error) {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine, in ns
		if err := netns.Set(ns); err != nil {
			done <- result{err: err}
			return
		}
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

// httpGet is one keep-alive GET / and its whole answer, which must be 200.
func httpGet(rw *bufio.ReadWriter) error {
	rw.WriteString("GET / HTTP/1.1\r\nHost: api\r\n\r\n")
	if err := rw.Flush(); err != nil {
		return err
	}
	resp, err := http.ReadResponse(rw.Reader, nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, body)
	}
	return err
}

// redisPingConn is one Redis PING answered +PONG.
func redisPingConn(rw *bufio.ReadWriter) error {
	rw.WriteString("PING\r\n")
	if err := rw.Flush(); err != nil {
		return err
	}
	line, err := rw.ReadString('\n')
	if err == nil && line != "+PONG\r\n" {
		err = fmt.Errorf("read %q", line)
	}
	return err
}

// dockerd is a Docker daemon of the bench's own (Debian's docker.io 20.10), with its data,
// exec root, pid file and socket in a temporary directory and its network in a lab host of
// its own, so that it touches nothing of the machine's, CI's or another lab's.
//
// Networking: dockerd keeps its defaults — the docker0 bridge, Compose's user-defined bridge
// network with its embedded DNS (how services reach each other by bare name) and iptables
// rules (iptables-nft) — which all work here inside the lab host's network namespace and go
// with it. It runs with only that namespace changed (lab's StartShared): `ip netns exec`
// would remount /sys, hiding the cgroup mounts dockerd needs ("Devices cgroup isn't mounted").
type dockerd struct {
	dir    string       // data-root, exec-root, pid file, socket, the Compose project
	client *http.Client // to the API on dir/docker.sock
}

// startDockerd starts the bench's dockerd, or skips without Docker and Compose.
func startDockerd(b *testing.B) *dockerd {
	for _, bin := range []string{"/usr/sbin/dockerd", "/usr/bin/docker-compose"} {
		if _, err := os.Stat(bin); err != nil {
			b.Skipf("no %s for the Docker Compose baseline (run scripts/deps.sh)", bin)
		}
	}
	dir, err := os.MkdirTemp("", "bzdock-")
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "docker.sock")
	d := &dockerd{dir: dir, client: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return new(net.Dialer).DialContext(ctx, "unix", sock)
		}}}}
	h := lab.New(b).Host("bzdock")
	p := h.StartShared(nil, "/usr/sbin/dockerd", "--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"), "-H", "unix://"+sock, "--log-level", "error",
		"--containerd-namespace", "bzdock", "--containerd-plugins-namespace", "bzdock-plugins")
	b.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(dir, "docker-compose.yaml")); err == nil {
			if err := d.composeErr("down", "--volumes", "--timeout", "2"); err != nil {
				b.Log(err)
			}
		}
		p.Stop()
		if err := os.RemoveAll(dir); err != nil {
			b.Logf("removing dockerd's directory: %v", err)
		}
	})
	eventually(b, 30*time.Second, "dockerd answering on "+sock, func() error { return d.api(b.Context(), "GET", "/_ping", nil, nil) })
	return d
}

// api calls the Docker API and decodes its JSON answer into out (when not nil).
func (d *dockerd) api(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://docker/v1.41"+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-tar")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode/100 != 2 {
		err = fmt.Errorf("docker %s %s: %s: %s", method, path, resp.Status, data)
	}
	if err == nil && out != nil {
		err = json.Unmarshal(data, out)
	}
	return err
}

// project loads the environment images into dockerd (`docker load` of the same tarballs
// containerd imports) and writes the Compose project: TestEnvironments' compose file, its
// secret from a file instead, as Compose 1.29 has no secrets from the environment.
func (d *dockerd) project(b *testing.B, dir, token string) {
	for _, build := range []func(dir string) (string, []image.File, image.Config, error){redisFiles, envapiFiles} {
		ref, files, cfg, err := build(dir)
		var tar bytes.Buffer
		if err == nil {
			err = image.Build(&tar, ref, files, cfg)
		}
		if err == nil {
			err = d.api(b.Context(), "POST", "/images/load?quiet=1", &tar, nil)
		}
		if err != nil {
			b.Fatalf("docker load of %s: %v", ref, err)
		}
	}
	compose := strings.Replace(shopCompose, "    environment: API_TOKEN\n", "    file: ./api_token\n", 1)
	if compose == shopCompose {
		b.Fatal("shopCompose's secret is no longer `environment: API_TOKEN`: update the bench")
	}
	if err := os.WriteFile(filepath.Join(d.dir, "api_token"), []byte(token), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.dir, "docker-compose.yaml"), []byte(compose), 0o644); err != nil {
		b.Fatal(err)
	}
}

// compose runs docker-compose on the project.
func (d *dockerd) compose(b *testing.B, args ...string) {
	if err := d.composeErr(args...); err != nil {
		b.Fatal(err)
	}
}

func (d *dockerd) composeErr(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/docker-compose", append([]string{"-p", benchEnv, "--project-directory", d.dir,
		"-f", filepath.Join(d.dir, "docker-compose.yaml")}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+filepath.Join(d.dir, "docker.sock"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// up runs `docker-compose up -d` and returns how long until the Docker API shows every
// service started since and ready, as env up's wait counts it: running (and healthy, when it
// has a healthcheck), or exited 0; and how long docker-compose took to return. It polls every
// 100 ms, as env up does, from the start: the time counted is the first poll that sees it,
// even before docker-compose returns.
func (d *dockerd) up(b *testing.B) (ready, returned time.Duration) {
	start := time.Now()
	type result struct {
		took time.Duration
		err  error
	}
	done := make(chan result, 1)
	go func() {
		err := d.composeErr("up", "-d")
		done <- result{time.Since(start), err}
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for ready == 0 {
		ok, err := d.ready(b.Context(), start)
		if err == nil && ok {
			ready = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("docker-compose up: not every service ready after 2 minutes (%v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := <-done
	if r.err != nil {
		b.Fatal(r.err)
	}
	return ready, r.took
}

// dockerContainer is what ready reads of GET /containers/ID/json.
type dockerContainer struct {
	Config struct{ Labels map[string]string }
	State  struct {
		Status    string
		ExitCode  int
		StartedAt time.Time
		Health    *struct{ Status string }
	}
}

// ready reports whether every service of the project (redis, migrate, api) has a container
// started after since that is ready.
func (d *dockerd) ready(ctx context.Context, since time.Time) (bool, error) {
	var list []struct{ ID string }
	filter := url.QueryEscape(`{"label":["com.docker.compose.project=` + benchEnv + `"]}`)
	if err := d.api(ctx, "GET", "/containers/json?all=1&filters="+filter, nil, &list); err != nil {
		return false, err
	}
	ready := map[string]bool{}
	for _, c := range list {
		var ct dockerContainer
		if err := d.api(ctx, "GET", "/containers/"+c.ID+"/json", nil, &ct); err != nil {
			return false, err
		}
		s := ct.State
		ready[ct.Config.Labels["com.docker.compose.service"]] = s.StartedAt.After(since) &&
			(s.Status == "running" && (s.Health == nil || s.Health.Status == "healthy") || s.Status == "exited" && s.ExitCode == 0)
	}
	return ready["redis"] && ready["migrate"] && ready["api"], nil
}
