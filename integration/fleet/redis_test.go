package fleet_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The fleet's redis-server, and the gate the storage-down-at-start test
// puts in front of it.

// Redis.

// redisServer is a redis-server of one test on a loopback port, without
// persistence: killed and started again, it has lost everything.
type redisServer struct {
	t    *testing.T
	port int
	dir  string
	log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{}
}

// newRedis prepares a Redis on a port of its own without starting it.
func newRedis(t *testing.T) *redisServer {
	r := &redisServer{t: t, port: processPort(t), dir: t.TempDir()}
	r.log = filepath.Join(r.dir, "redis.log")
	t.Cleanup(func() {
		r.kill()
		if t.Failed() {
			t.Logf("redis-server log (tail):\n%s", tail(r.log, 4000))
		}
	})
	return r
}

// startRedis starts a Redis of the test's own and waits until it answers.
func startRedis(t *testing.T) *redisServer {
	r := newRedis(t)
	r.start()
	return r
}

func (r *redisServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

// start starts redis-server on its port and waits until it answers PING.
func (r *redisServer) start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		r.t.Fatal("redis-server is already running")
	}
	log, err := os.OpenFile(r.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--daemonize", "no")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting redis-server: %v", err)
	}
	exit := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exit) }()
	r.cmd, r.exit = cmd, exit
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exit:
			r.cmd = nil
			r.t.Fatalf("redis-server on %s exited at start:\n%s", r.addr(), tail(r.log, 4000))
		default:
		}
		if got, err := r.command("PING"); err == nil && got == "PONG" {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on %s did not answer PING within 10s:\n%s", r.addr(), tail(r.log, 4000))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill ends redis-server with SIGKILL (nothing saved, nothing flushed).
func (r *redisServer) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exit
	r.cmd = nil
}

// command sends one command in RESP over a new connection and returns the
// reply (simple string, integer or bulk string).
func (r *redisServer) command(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", r.addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return "", err
	}
	rd := bufio.NewReader(c)
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("bulk reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// info returns the fields of INFO section.
func (r *redisServer) info(section string) (map[string]string, error) {
	s, err := r.command("INFO", section)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && !strings.HasPrefix(k, "#") {
			out[k] = v
		}
	}
	return out, nil
}

// redisGate stands between the nodes and a Redis. Closed, it answers
// PING (so that caddy-storage-redis, which pings Redis while it
// provisions, lets Caddy start) and fails every other command with a Redis
// error: a storage that does not answer. Open, it forwards every
// connection to Redis; opening it closes the connections it served
// closed, and the clients connect again.
type redisGate struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	isOpen bool
	closed map[net.Conn]bool // connections served while closed
	all    map[net.Conn]bool
	wg     sync.WaitGroup
}

func newRedisGate(t *testing.T, target string) *redisGate {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", processPort(t)))
	if err != nil {
		t.Fatal(err)
	}
	g := &redisGate{l: l, target: target, closed: map[net.Conn]bool{}, all: map[net.Conn]bool{}}
	g.wg.Go(g.accept)
	t.Cleanup(func() {
		l.Close()
		g.mu.Lock()
		for c := range g.all {
			c.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	})
	return g
}

func (g *redisGate) addr() string { return g.l.Addr().String() }

// open lets every connection through to Redis from now on.
func (g *redisGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.isOpen = true
	for c := range g.closed {
		c.Close()
	}
}

func (g *redisGate) accept() {
	for {
		c, err := g.l.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		open := g.isOpen
		if !open {
			g.closed[c] = true
		}
		g.all[c] = true
		g.mu.Unlock()
		if open {
			g.wg.Go(func() { g.forward(c) })
		} else {
			g.wg.Go(func() { g.refuse(c) })
		}
	}
}

func (g *redisGate) forward(c net.Conn) {
	defer g.done(c)
	up, err := net.DialTimeout("tcp", g.target, time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}

func (g *redisGate) done(c net.Conn) {
	c.Close()
	g.mu.Lock()
	delete(g.closed, c)
	delete(g.all, c)
	g.mu.Unlock()
}

// refuse reads commands (RESP arrays of bulk strings, as clients send
// them) and answers them as a failing server.
func (g *redisGate) refuse(c net.Conn) {
	defer g.done(c)
	rd := bufio.NewReader(c)
	for {
		cmd, err := readCommand(rd)
		if err != nil {
			return
		}
		reply := "-ERR fleet test: the storage is failing\r\n"
		if len(cmd) > 0 && strings.EqualFold(cmd[0], "PING") {
			reply = "+PONG\r\n"
		}
		if _, err := io.WriteString(c, reply); err != nil {
			return
		}
	}
}

func readCommand(rd *bufio.Reader) ([]string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "*") {
		return strings.Fields(line), nil // an inline command
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil {
		return nil, err
	}
	args := make([]string, 0, n)
	for range n {
		head, err := rd.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimRight(strings.TrimPrefix(head, "$"), "\r\n"))
		if err != nil || size < 0 {
			return nil, fmt.Errorf("bad bulk header %q", head)
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return nil, err
		}
		args = append(args, string(buf[:size]))
	}
	return args, nil
}
