// Command whoami is the HTTP server (and client) of the intercept tests: the server answers
// every request with its name, so a test sees who answered, over HTTP/1.1 and h2c, and echoes
// WebSocket messages prefixed with its name; the client calls a URL in a loop and prints a
// line per answer, so a test sees that no request failed. Build it static (CGO_ENABLED=0) to
// run in a busybox image.
//
//	whoami [-listen :3000] [-name NAME]                 # the server; NAME defaults to the hostname
//	whoami -client URL [-every 100ms]                   # the client
//
// The server answers GET / with "NAME PROTO\n" (PROTO: HTTP/1.1 or HTTP/2.0), /ws with a
// WebSocket that sends back every message as "NAME: message", POST /echo with the body,
// streamed back as it comes, and POST /sink with the number of bytes its body had (a
// throughput test's far end). The client prints "ok N BODY" or "fail N ERROR" per request, each
// on a new connection.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

func main() {
	listen := flag.String("listen", ":3000", "the server's address")
	name := flag.String("name", "", "the name the server answers with (default: the hostname)")
	client := flag.String("client", "", "be the client: call this URL in a loop")
	every := flag.Duration("every", 100*time.Millisecond, "the client's pause between requests")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if *client != "" {
		loop(ctx, *client, *every)
		return
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	srv := &http.Server{Addr: *listen, Handler: handler(*name), Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Printf("whoami %s: serving on %s", *name, *listen)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

func handler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n", name, r.Proto)
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Whoami", name)
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				rc.Flush()
			}
			if err != nil {
				return
			}
		}
	})
	mux.HandleFunc("POST /sink", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d\n", n)
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, []byte(name+": "+string(msg))); err != nil {
				return
			}
		}
	})
	return mux
}

// loop calls url every pause until ctx ends, a new connection each time.
func loop(ctx context.Context, url string, pause time.Duration) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for n := 1; ctx.Err() == nil; n++ {
		resp, err := c.Get(url)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("%s", resp.Status)
			}
		}
		if err != nil {
			fmt.Printf("fail %d %v\n", n, err)
		} else {
			fmt.Printf("ok %d %s\n", n, strings.TrimSpace(string(body)))
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}
