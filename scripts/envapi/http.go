package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"
)

const maxGreeting = 64 << 10

// serve answers HTTP on listen until ctx ends.
func serve(ctx context.Context, listen string, rc *redisClient, stderr io.Writer) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	logger := log.New(stderr, "envapi: ", 0)
	srv := &http.Server{Handler: newHandler(rc), ReadHeaderTimeout: 10 * time.Second, ErrorLog: logger}
	logger.Printf("serving on %s, redis at %s", ln.Addr(), rc.addr)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	srv.Shutdown(shut)
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func newHandler(rc *redisClient) http.Handler {
	a := &api{rc: rc}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.getGreeting)
	mux.HandleFunc("GET /greeting", a.getGreeting)
	mux.HandleFunc("PUT /greeting", a.putGreeting)
	mux.HandleFunc("GET /healthz", a.healthz)
	return mux
}

type api struct{ rc *redisClient }

func (a *api) getGreeting(w http.ResponseWriter, r *http.Request) {
	v, err := a.rc.do(r.Context(), "GET", "greeting")
	switch {
	case err != nil:
		a.redisFailed(w, err)
	case v == nil:
		http.Error(w, "greeting is not set in redis: PUT /greeting with a value, or run envapi -migrate", http.StatusNotFound)
	default:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, *v)
	}
}

func (a *api) putGreeting(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxGreeting))
	if err != nil {
		http.Error(w, fmt.Sprintf("reading the greeting: %v (at most %d bytes)", err, maxGreeting), http.StatusBadRequest)
		return
	}
	if _, err := a.rc.do(r.Context(), "SET", "greeting", string(body)); err != nil {
		a.redisFailed(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	if _, err := a.rc.do(r.Context(), "PING"); err != nil {
		http.Error(w, fmt.Sprintf("redis at %s: %v", a.rc.addr, err), http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

func (a *api) redisFailed(w http.ResponseWriter, err error) {
	http.Error(w, fmt.Sprintf("redis at %s: %v", a.rc.addr, err), http.StatusBadGateway)
}
