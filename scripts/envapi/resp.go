package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// redisError is an error reply of Redis ("-ERR …", "-NOAUTH …").
type redisError string

func (e redisError) Error() string { return "redis: " + string(e) }

// transient reports whether err may go away by itself: the server not up yet, or still
// loading its data. Other error replies (a wrong password) will not.
func transient(err error) bool {
	var re redisError
	if errors.As(err, &re) {
		return strings.HasPrefix(string(re), "LOADING")
	}
	return err != nil
}

// redisClient speaks RESP to one Redis server over a few reused connections.
type redisClient struct {
	addr     string // host:port; the host may be a bare compose service name
	password string // sent with AUTH on each new connection when set
	idle     chan *redisConn
}

func newRedisClient(addr, password string) *redisClient {
	return &redisClient{addr: addr, password: password, idle: make(chan *redisConn, 8)}
}

type redisConn struct {
	c  net.Conn
	br *bufio.Reader
}

// do sends one command and returns its reply: a string, or nil for Redis's null.
func (r *redisClient) do(ctx context.Context, args ...string) (*string, error) {
	c, err := r.conn(ctx)
	if err != nil {
		return nil, err
	}
	reply, err := c.roundTrip(ctx, args)
	var re redisError
	if err != nil && !errors.As(err, &re) {
		c.c.Close() // the stream may be out of step
		return nil, err
	}
	r.release(c)
	return reply, err
}

func (r *redisClient) conn(ctx context.Context) (*redisConn, error) {
	select {
	case c := <-r.idle:
		return c, nil
	default:
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return nil, err
	}
	c := &redisConn{c: nc, br: bufio.NewReader(nc)}
	if r.password != "" {
		if _, err := c.roundTrip(ctx, []string{"AUTH", r.password}); err != nil {
			nc.Close()
			return nil, fmt.Errorf("AUTH: %w", err)
		}
	}
	return c, nil
}

func (r *redisClient) release(c *redisConn) {
	select {
	case r.idle <- c:
	default:
		c.c.Close()
	}
}

// close closes the idle connections.
func (r *redisClient) close() {
	for {
		select {
		case c := <-r.idle:
			c.c.Close()
		default:
			return
		}
	}
}

func (c *redisConn) roundTrip(ctx context.Context, args []string) (*string, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	c.c.SetDeadline(deadline)
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.c.Write([]byte(b.String())); err != nil {
		return nil, err
	}
	return readReply(c.br)
}

// readReply reads one RESP reply of the kinds these commands answer with.
func readReply(br *bufio.Reader) (*string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("redis: empty reply line")
	}
	switch kind, rest := line[0], line[1:]; kind {
	case '+', ':':
		return &rest, nil
	case '-':
		return nil, redisError(rest)
	case '$':
		return readBulk(br, rest)
	default:
		return nil, fmt.Errorf("redis: unexpected reply %q", line)
	}
}

func readBulk(br *bufio.Reader, size string) (*string, error) {
	n, err := strconv.Atoi(size)
	if err != nil || n < -1 || n > 512<<20 {
		return nil, fmt.Errorf("redis: bad bulk length %q", size)
	}
	if n == -1 {
		return nil, nil
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(br, buf); err != nil {
		return nil, err
	}
	s := string(buf[:n])
	return &s, nil
}
