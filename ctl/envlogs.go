package ctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"sync"

	"meshwork.dev/coord/api"
)

// envLogs asks the environment's machine for its services' logs over the mesh, through the
// local daemon, as ws logs does: one service's as it is, or every service's with each line
// prefixed "svc | " (read concurrently with --follow), as docker compose logs prints them.
func envLogs(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	state, socket := daemonPaths(fs)
	follow := fs.Bool("follow", false, "keep printing what they write")
	tail := fs.Int("tail", 0, "print only the last `N` lines of each (0: all)")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return usageErrorf("env logs: want NAME [SERVICE], got %d argument(s); run 'meshctl env logs --help'", fs.NArg())
	}
	env, err := e.getEnvironment(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	services, err := pickServices(env, fs.Arg(1))
	if err != nil {
		return err
	}
	q := url.Values{"tail": {strconv.Itoa(*tail)}}
	if *follow {
		q.Set("follow", "1")
	}
	open := func(svc string) (io.ReadCloser, error) {
		path := "/v1/environments/" + url.PathEscape(env.Name) + "/services/" + url.PathEscape(svc) + "/logs?" + q.Encode()
		res, err := machineDo(ctx, socketPath(*state, *socket), env.Machine, "GET", path)
		if err != nil {
			return nil, fmt.Errorf("env logs %s %s: %w", env.Name, svc, err)
		}
		return res.Body, nil
	}
	if fs.Arg(1) != "" {
		return e.copyLog(ctx, open, fs.Arg(1), *follow)
	}
	return e.prefixedLogs(ctx, open, services, *follow)
}

// pickServices is the one service named (or all of env's when svc is "").
func pickServices(env api.Environment, svc string) ([]string, error) {
	var names []string
	for _, s := range env.Services {
		if svc == "" || s.Name == svc {
			names = append(names, s.Name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("environment %s has no service %q; its services: %s", env.Name, svc, serviceNames(env))
	}
	return names, nil
}

// copyLog prints one service's log as it is.
func (e *env) copyLog(ctx context.Context, open func(string) (io.ReadCloser, error), svc string, follow bool) error {
	body, err := open(svc)
	if err != nil {
		return err
	}
	defer body.Close()
	n, err := io.Copy(e.stdout, body)
	if ctx.Err() != nil {
		return nil // Ctrl-C ends --follow
	}
	if err == nil && n == 0 && !follow {
		fmt.Fprintf(e.stderr, "service %s has written nothing yet (--follow waits for more)\n", svc)
	}
	return err
}

// prefixedLogs prints every service's log, each line prefixed with its service's name:
// one after the other, or all at once with follow.
func (e *env) prefixedLogs(ctx context.Context, open func(string) (io.ReadCloser, error), services []string, follow bool) error {
	width := 0
	for _, s := range services {
		width = max(width, len(s))
	}
	out := &lockedWriter{w: e.stdout}
	errs := make([]error, len(services))
	one := func(i int) {
		body, err := open(services[i])
		if err != nil {
			errs[i] = err
			return
		}
		defer body.Close()
		errs[i] = prefixLines(out, body, fmt.Sprintf("%-*s | ", width, services[i]))
	}
	if follow {
		var wg sync.WaitGroup
		for i := range services {
			wg.Go(func() { one(i) })
		}
		wg.Wait()
	} else {
		for i := range services {
			one(i)
		}
	}
	if ctx.Err() != nil {
		return nil // Ctrl-C ends --follow
	}
	if out.n == 0 && !follow && errors.Join(errs...) == nil {
		fmt.Fprintf(e.stderr, "the services have written nothing yet (--follow waits for more)\n")
	}
	return errors.Join(errs...)
}

// prefixLines copies r to w a line at a time, each line prefixed.
func prefixLines(w *lockedWriter, r io.Reader, prefix string) error {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			if line[len(line)-1] != '\n' {
				line += "\n"
			}
			if _, werr := w.Write([]byte(prefix + line)); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// lockedWriter writes whole lines from several goroutines, and counts them.
type lockedWriter struct {
	mu sync.Mutex // guards w and n
	w  io.Writer
	n  int
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	return l.w.Write(p)
}
