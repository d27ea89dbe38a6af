package node

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// controlProxy forwards the node's control connections to the first coord replica that
// answers, starting from the one that answered last. Every replica serves any node and
// presents the same control key, so when one dies the client's reconnect lands on another.
type controlProxy struct {
	ln    net.Listener
	hosts []string // host:port of each replica

	mu    sync.Mutex // guards cur and conns
	cur   int
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// startControlProxy listens on loopback (on the port saved in dir, so the node's control
// URL stays the same across restarts) and returns the URL to give tsnet.
func startControlProxy(dir string, urls []string) (*controlProxy, string, error) {
	p := &controlProxy{conns: map[net.Conn]bool{}}
	for _, u := range urls {
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" || pu.Scheme != "http" {
			return nil, "", fmt.Errorf("coord address %q: want http://host:port", u)
		}
		p.hosts = append(p.hosts, pu.Host)
	}
	portFile := filepath.Join(dir, "control-proxy-port")
	addr := "127.0.0.1:0"
	if b, err := os.ReadFile(portFile); err == nil {
		addr = "127.0.0.1:" + strings.TrimSpace(string(b))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return nil, "", err
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if err := os.MkdirAll(dir, 0o700); err == nil {
		os.WriteFile(portFile, []byte(port+"\n"), 0o600)
	}
	p.ln = ln
	p.wg.Add(1)
	go p.serve()
	return p, "http://" + ln.Addr().String(), nil
}

func (p *controlProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.forward(c)
		}()
	}
}

func (p *controlProxy) forward(c net.Conn) {
	defer c.Close()
	up, err := p.dial()
	if err != nil {
		return
	}
	defer up.Close()
	if !p.track(c, up) {
		return
	}
	defer p.untrack(c, up)
	splice(c, up)
}

// dial connects to the first replica that answers, starting from the current one.
func (p *controlProxy) dial() (net.Conn, error) {
	p.mu.Lock()
	start := p.cur
	p.mu.Unlock()
	var err error
	for i := range p.hosts {
		j := (start + i) % len(p.hosts)
		var c net.Conn
		if c, err = net.DialTimeout("tcp", p.hosts[j], time.Second); err == nil {
			p.mu.Lock()
			p.cur = j
			p.mu.Unlock()
			return c, nil
		}
	}
	return nil, err
}

func (p *controlProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false // closed
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

func (p *controlProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

// Close stops the proxy and its connections, and waits for them.
func (p *controlProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}
