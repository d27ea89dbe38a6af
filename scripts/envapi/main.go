// Command envapi is the small HTTP API of the environment tests and the demo: it reads and
// writes Redis, reached by its bare compose service name. Build it static (CGO_ENABLED=0) to
// run in a busybox image.
//
//	envapi [-listen :8080] [-redis redis:6379] [-redis-password-file /run/secrets/redis_password]
//	envapi -migrate [-wait 30s] [-redis …] [-redis-password-file …]
//
// It serves GET / (the value of key "greeting"; 404 when unset), PUT /greeting (sets it from
// the request body) and GET /healthz (200 when Redis answers PING). With -migrate it is the
// one-shot job instead: it waits for Redis, sets "greeting" to "hello from redis" unless it is
// set, says what it did and exits 0, or 1 with the reason.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// defaultGreeting is what -migrate stores.
const defaultGreeting = "hello from redis"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	var usage usageError
	switch {
	case errors.As(err, &usage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "envapi:", err)
		os.Exit(1)
	}
}

// usageError is a bad command line; flag has already said why.
type usageError struct{ error }

type options struct {
	listen, redis, passwordFile string
	migrate                     bool
	wait                        time.Duration
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fl := flag.NewFlagSet("envapi", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&o.listen, "listen", ":8080", "address to serve HTTP on")
	fl.StringVar(&o.redis, "redis", "redis:6379", "Redis address, host:port (a bare service name works in an environment)")
	fl.StringVar(&o.passwordFile, "redis-password-file", "", "file holding the Redis password, sent with AUTH (e.g. /run/secrets/redis_password)")
	fl.BoolVar(&o.migrate, "migrate", false, `set "greeting" unless set, then exit (the one-shot job)`)
	fl.DurationVar(&o.wait, "wait", 30*time.Second, "with -migrate: how long to wait for Redis to answer")
	if err := fl.Parse(args); err != nil {
		return o, usageError{err}
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "envapi: unexpected arguments %q: it takes flags only\n", fl.Args())
		return o, usageError{errors.New("unexpected arguments")}
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	password, err := readPassword(o.passwordFile)
	if err != nil {
		return err
	}
	rc := newRedisClient(o.redis, password)
	defer rc.close()
	if o.migrate {
		return migrate(ctx, rc, o.wait, stdout)
	}
	return serve(ctx, o.listen, rc, stderr)
}

// readPassword reads a password file (a compose secret), without its trailing newline.
func readPassword(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("redis password: %w (give the secret's file with -redis-password-file)", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// migrate waits up to wait for Redis, then sets the greeting unless it is set.
func migrate(ctx context.Context, rc *redisClient, wait time.Duration, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := waitReady(ctx, rc); err != nil {
		return fmt.Errorf("migrate: redis at %s did not answer within %v: %w", rc.addr, wait, err)
	}
	ok, err := rc.do(ctx, "SET", "greeting", defaultGreeting, "NX")
	if err != nil {
		return fmt.Errorf("migrate: SET greeting at %s: %w", rc.addr, err)
	}
	if ok != nil {
		fmt.Fprintf(stdout, "migrate: set greeting to %q in redis at %s\n", defaultGreeting, rc.addr)
		return nil
	}
	cur, err := rc.do(ctx, "GET", "greeting")
	if err != nil || cur == nil {
		return fmt.Errorf("migrate: GET greeting at %s: %v", rc.addr, err)
	}
	fmt.Fprintf(stdout, "migrate: greeting already set to %q in redis at %s; left as it is\n", *cur, rc.addr)
	return nil
}

// waitReady pings until Redis answers, an error that will not pass (a wrong password), or ctx ends.
func waitReady(ctx context.Context, rc *redisClient) error {
	for {
		_, err := rc.do(ctx, "PING")
		if !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}
