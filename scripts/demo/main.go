// Command demo is `make run`: a whole Meshwork on this one machine. A coord, a workmachine
// and a laptop, each in a network namespace of its own (built with overlay/lab), joined in one
// mesh, with a workspace "dev" on the workmachine that you can ssh into by name, connected to an
// environment "shop" (a Redis and a web server, from a compose file) that it reaches as
// redis:6379 and web:80. It prints what
// to type next and keeps running until Ctrl-C (or `make stop`), which tears it all down; state
// stays under -state, so the next run is quick.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/overlay/lab"
	"meshwork.dev/workspace/ctrd"
	"meshwork.dev/workspace/image"
	"meshwork.dev/workspace/image/samples"
)

const (
	devImage   = "meshwork.dev/dev:1"
	redisImage = "meshwork.dev/redis:7"
	machine    = "demo-wm"
)

// shopCompose is the demo's environment: Redis, its data in a named volume (kept between
// runs), healthy once it answers PING; and web, a web server (busybox's httpd) to intercept.
const shopCompose = `services:
  web:
    image: ` + devImage + `
    command: ["sh", "-c", "mkdir -p /www && echo hello from web > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: ["80"]
  redis:
    image: ` + redisImage + `
    expose: ["6379"]
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 1s
      retries: 30
volumes:
  data: {}
`

func main() {
	meshctl := flag.String("meshctl", "bin/meshctl", "the (static) meshctl binary to run")
	state := flag.String("state", "/var/lib/meshwork/demo", "state directory, kept between runs")
	listen := flag.String("listen", "127.0.0.1:8080", "where this machine reaches coord's admin API")
	flag.Parse()
	r := &run{state: *state, listen: *listen}
	if err := os.MkdirAll(*state, 0o700); err != nil {
		r.fail("making %s: %v", *state, err)
	}
	log, err := os.OpenFile(filepath.Join(*state, "demo.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		r.fail("opening the log: %v", err)
	}
	r.log = log
	bin, err := filepath.Abs(*meshctl)
	if err != nil {
		r.fail("%v", err)
	}
	r.meshctl = bin
	start := time.Now()
	r.up()
	fmt.Printf("\nMeshwork is up, in %v: coord, workmachine %s, laptop; workspace dev, connected to environment shop.\n", time.Since(start).Round(100*time.Millisecond), machine)
	r.instructions()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.WriteFile(filepath.Join(*state, "demo.pid"), []byte(fmt.Sprint(os.Getpid())), 0o600)
	<-ctx.Done()
	fmt.Println("\nmake run: stopping (state stays in " + *state + ")")
	r.cleanup()
	os.Remove(filepath.Join(*state, "demo.pid"))
}

// run is one `make run`; it is the lab's TB, so the lab's failures and logs land here.
type run struct {
	state, meshctl string
	log            io.Writer
	step           string

	mu       sync.Mutex
	cleanups []func()

	lab               *lab.Lab
	coord, wm, laptop *lab.Host
	coordURL, token   string
	listen            string // where this machine reaches the admin API
	wmID              string // the workmachine's node ID, which its agent labels its containers with
}

func (r *run) Helper() {}

func (r *run) Logf(format string, args ...any) {
	fmt.Fprintf(r.log, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func (r *run) Fatalf(format string, args ...any) { r.fail(format, args...) }
func (r *run) Skipf(format string, args ...any)  { r.fail(format, args...) }

func (r *run) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

func (r *run) cleanup() {
	r.mu.Lock()
	fs := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// fail says which step failed and why, tears down what was built, and exits.
func (r *run) fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "\nmake run: %s failed: %s\n  (the processes' output is in %s)\n", r.step, fmt.Sprintf(format, args...),
		filepath.Join(r.state, "demo.log"))
	r.cleanup()
	os.Exit(1)
}

// do runs one step, showing it and how long it took.
func (r *run) do(step string, f func() error) {
	r.step = step
	fmt.Printf("  %-46s", step+" ...")
	t := time.Now()
	if err := f(); err != nil {
		fmt.Println(" failed")
		r.fail("%v", err)
	}
	fmt.Printf(" %v\n", time.Since(t).Round(10*time.Millisecond))
}

func (r *run) up() {
	fmt.Println("make run: a Meshwork on this machine (log: " + filepath.Join(r.state, "demo.log") + ")")
	r.do("checking the machine", r.check)
	r.do("building and importing the images (dev, redis)", r.images)
	r.do("making the network (coord, workmachine, laptop)", func() error {
		r.lab = lab.New(r)
		in := r.lab.Internet()
		r.coord, r.wm, r.laptop = in.PublicHost("coord"), in.PublicHost("wm"), in.PublicHost("laptop")
		return nil
	})
	r.do("starting coord", r.startCoord)
	r.do("serving the admin API on this machine", r.proxy)
	r.do("starting the workmachine "+machine, r.startWorkmachine)
	r.do("joining the laptop with meshctl up", r.joinLaptop)
	r.do("creating the workspace dev (or starting it)", r.workspace)
	r.do("writing an ssh config for it", r.sshConfig)
	r.do("creating the environment shop (or starting it)", r.environment)
	r.do("connecting dev to shop", func() error { _, err := r.ctl("env", "connect", "dev", "shop"); return err })
}

func (r *run) check() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, containerd): sudo make run")
	}
	if _, err := os.Stat(ctrd.DefaultAddress); err != nil {
		return fmt.Errorf("containerd is not running at %s: run scripts/deps.sh", ctrd.DefaultAddress)
	}
	if _, err := os.Stat(r.meshctl); err != nil {
		return fmt.Errorf("no %s: run make build", r.meshctl)
	}
	return nil
}

// images builds the dev and redis images offline (samples: busybox and this machine's
// redis-cli, curl, redis-server) and imports them.
func (r *run) images() error {
	rt := &ctrd.Runtime{Machine: "demo-import", Identity: "demo-import", Dir: filepath.Join(r.state, "import")}
	defer rt.Close()
	for ref, build := range map[string]func() ([]image.File, image.Config, error){devImage: samples.Dev, redisImage: samples.Redis} {
		files, cfg, err := build()
		if err != nil {
			return fmt.Errorf("image %s: %w (scripts/deps.sh installs redis-server, redis-tools and curl)", ref, err)
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

func (r *run) startCoord() error {
	key := filepath.Join(filepath.Dir(r.state), "secret.key") // apart from the state it protects
	if _, err := os.Stat(key); err != nil {
		b := make([]byte, 32)
		rand.Read(b)
		if err := os.WriteFile(key, []byte(base64.StdEncoding.EncodeToString(b)+"\n"), 0o600); err != nil {
			return err
		}
	}
	ip := r.coord.Addr(r.lab.Internet().Net).String()
	r.coordURL = "http://" + ip + ":8080"
	dir := filepath.Join(r.state, "coord")
	r.coord.Start(nil, r.meshctl, "coord", "--id", "c1", "--state", dir, "--http", ip+":8080",
		"--cluster", ip+":7000", "--secret-key-file", key)
	return r.wait(30*time.Second, "coord's admin key", func() error {
		b, err := os.ReadFile(filepath.Join(dir, "admin.key"))
		if err != nil {
			return err
		}
		r.token = strings.TrimSpace(string(b))
		return r.call("GET", "/v1/cluster", nil, nil)
	})
}

// client reaches coord inside the lab from this machine's namespace.
func (r *run) client() *api.Client {
	return &api.Client{Base: r.coordURL, Token: r.token, HTTP: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return r.laptop.DialContext(ctx, network, addr)
		}}}}
}

func (r *run) call(method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.client().Do(ctx, method, path, in, out)
}

// proxy forwards r.listen (on this machine) to coord's admin API inside the lab.
func (r *run) proxy() error {
	ln, err := net.Listen("tcp", r.listen)
	if err != nil {
		return fmt.Errorf("%v: is another make run (or a coord) up? make stop", err)
	}
	r.Cleanup(func() { ln.Close() })
	r.listen = ln.Addr().String() // the port, when asked for any
	target := strings.TrimPrefix(r.coordURL, "http://")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := r.laptop.DialContext(context.Background(), "tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	return nil
}

// authKey makes a key that joins a machine with tags (the workmachine's) or none (the laptop's).
func (r *run) authKey(tags ...string) (string, error) {
	var k api.NewAuthKey
	err := r.call("POST", "/v1/authkeys", api.CreateAuthKey{Reusable: true, Expiry: "1h", Tags: tags}, &k)
	return k.Key, err
}

func (r *run) startWorkmachine() error {
	key, err := r.authKey(fsm.WorkmachineTag)
	if err != nil {
		return err
	}
	p := r.wm.StartShared(nil, r.meshctl, "node", "--coord", r.coordURL, "--auth-key", key,
		"--state", filepath.Join(r.state, "wm"), "--hostname", machine)
	r.Cleanup(func() { p.Stop(); r.removeContainers() })
	return r.wait(60*time.Second, machine+" on the mesh", func() error {
		var nodes []api.Node
		if err := r.call("GET", "/v1/nodes", nil, &nodes); err != nil {
			return err
		}
		for _, n := range nodes {
			if n.Name == machine {
				r.wmID = n.ID
				return nil
			}
		}
		return errors.New("not yet")
	})
}

// removeContainers removes the workmachine's workspace and service containers (volumes and
// homes stay): make run leaves nothing running, and the next one's agent makes them again.
func (r *run) removeContainers() {
	rt := &ctrd.Runtime{Machine: machine, Identity: r.wmID, Dir: filepath.Join(r.state, "wm", "workspaces")}
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := rt.List(ctx)
	for _, s := range l {
		err = errors.Join(err, rt.Delete(ctx, s.Name))
	}
	svcs, lerr := rt.ListServices(ctx)
	err = errors.Join(err, lerr)
	for _, s := range svcs {
		err = errors.Join(err, rt.DeleteService(ctx, s.ID))
	}
	if err != nil {
		r.Logf("removing %s's containers: %v", machine, err)
		fmt.Fprintf(os.Stderr, "make run: removing %s's containers: %v\n", machine, err)
	}
}

func (r *run) socket() string { return filepath.Join(r.state, "laptop", "meshctl.sock") }

func (r *run) joinLaptop() error {
	state := filepath.Join(r.state, "laptop")
	r.laptop.Start(nil, r.meshctl, "daemon", "--state", state)
	// Up once the daemon serves: up earlier would start a daemon of its own.
	if err := r.wait(30*time.Second, "the laptop's daemon", func() error {
		c, err := net.Dial("unix", r.socket()) // a socket file may be left from an earlier run
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		return err
	}
	key, err := r.authKey()
	if err != nil {
		return err
	}
	return r.wait(60*time.Second, "meshctl up", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := r.laptop.Command(ctx, r.meshctl, "up", "--state", state, "--coord", r.coordURL, "--auth-key", key, "--hostname", "laptop")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

func (r *run) workspace() error {
	var ws api.Workspace
	err := r.call("POST", "/v1/workspaces", api.CreateWorkspace{Name: "dev", Machine: machine, Image: devImage}, &ws)
	var ae *api.Error
	if errors.As(err, &ae) && ae.Code == api.CodeConflict {
		err = r.call("POST", "/v1/workspaces/dev/start", nil, &ws)
	}
	if err != nil {
		return err
	}
	return r.wait(60*time.Second, "dev running", func() error {
		if err := r.call("GET", "/v1/workspaces/dev", nil, &ws); err != nil {
			return err
		}
		if ws.State == "failed" {
			return fmt.Errorf("dev failed: %s", ws.Reason)
		}
		if ws.State != "running" || ws.HostKey == "" {
			return fmt.Errorf("dev is %s", ws.State)
		}
		return nil
	})
}

func (r *run) sshConfig() error {
	out, err := r.ctl("ssh-config", "--known-hosts", filepath.Join(r.state, "known_hosts"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.state, "ssh_config"), []byte(out), 0o600); err != nil {
		return err
	}
	env := fmt.Sprintf("export MESHCTL_COORD=http://%s MESHCTL_TOKEN=%s MESHCTL_SOCKET=%s\n", r.listen, r.token, r.socket())
	return os.WriteFile(filepath.Join(r.state, "env"), []byte(env), 0o600)
}

// environment creates shop on the workmachine and waits until its services are ready; after
// an earlier run it is there already: it takes this compose file and starts again with its data.
func (r *run) environment() error {
	file := filepath.Join(r.state, "shop.yaml")
	if err := os.WriteFile(file, []byte(shopCompose), 0o600); err != nil {
		return err
	}
	var e api.Environment
	if err := r.call("GET", "/v1/environments/shop", nil, &e); err == nil {
		if _, err := r.ctl("env", "update", "shop", "-f", file, "--wait=false"); err != nil {
			return err
		}
		_, err := r.ctl("env", "up", "shop")
		return err
	}
	_, err := r.ctl("env", "create", "shop", "-f", file, "--machine", machine)
	return err
}

// ctl runs meshctl as the admin on the laptop (coord is inside the lab), its output logged.
func (r *run) ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := r.laptop.Command(ctx, r.meshctl, args...)
	cmd.Env = append(os.Environ(), "MESHCTL_COORD="+r.coordURL, "MESHCTL_TOKEN="+r.token, "MESHCTL_SOCKET="+r.socket())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r.Logf("meshctl %s:\n%s%s", strings.Join(args, " "), out.String(), errb.String())
	if err != nil {
		return "", fmt.Errorf("meshctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (r *run) instructions() {
	fmt.Printf(`
In another terminal, from this directory:
  . %[1]s/env                  # sets MESHCTL_COORD, MESHCTL_TOKEN (the admin key, also in %[1]s/coord/admin.key), MESHCTL_SOCKET
  bin/meshctl ssh dev          # a shell in the workspace, over the mesh
  ssh -F %[1]s/ssh_config dev  # plain OpenSSH, the same way
  bin/meshctl ws list          # the workspace and its state
  bin/meshctl env status shop  # the environment: redis, healthy
  bin/meshctl ssh dev -- redis-cli -h redis ping   # dev reaches shop's services by bare name
  bin/meshctl intercept start shop/web:80 --to dev:3000   # shop's web traffic goes to dev's port 3000
  bin/meshctl status           # the laptop on the mesh and its peers
Ctrl-C here (or make stop) tears it all down; the next make run picks up the same state.
`, r.state)
}

// wait retries f every 100 ms for up to limit.
func (r *run) wait(limit time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v: %w", what, limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
