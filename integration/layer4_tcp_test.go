package integration_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	_ "github.com/caddy-targetgroup/caddy-targetgroup/caddyfile"
)

// The layer4 handler over TCP: spread, connection counts, half-close,
// stickiness, dial failures and retries, and its config (JSON and
// Caddyfile).

func TestLayer4TCPRoundRobinAndInFlight(t *testing.T) {
	a, b, c := newL4Backend(t, "a", "127.0.0.1", l4TCP), newL4Backend(t, "b", "127.0.0.1", l4TCP), newL4Backend(t, "c", "127.0.0.1", l4TCP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(l4Group("TCP", nil), map[string]any{"listen": []string{listen}}))
	l4Register(t, in, a, b, c)

	got := map[string]int{}
	for i := 0; i < 30; i++ {
		conn := l4Dial(t, listen, "")
		conn.echo(t, fmt.Sprintf("hello %d", i))
		got[conn.target]++
		conn.Close()
	}
	if got["a"] != 10 || got["b"] != 10 || got["c"] != 10 {
		t.Fatalf("30 connections over 3 targets: %v, want 10 each", got)
	}
	waitFor(t, "in_flight back to 0", 5*time.Second, func() bool {
		f := in.inFlight("pool")
		return f[a.key()] == 0 && f[b.key()] == 0 && f[c.key()] == 0
	})

	// Open connections count exactly, up and down.
	var open []*l4Conn
	for i := 0; i < 6; i++ {
		open = append(open, l4Dial(t, listen, ""))
	}
	if f := in.inFlight("pool"); f[a.key()] != 2 || f[b.key()] != 2 || f[c.key()] != 2 {
		t.Fatalf("in_flight with 6 open connections: %v, want 2 each", f)
	}
	for i, conn := range open[:3] {
		conn.echo(t, "still here")
		conn.Close()
		open[i] = nil
	}
	waitFor(t, "in_flight 1 per target", 5*time.Second, func() bool {
		f := in.inFlight("pool")
		return f[a.key()] == 1 && f[b.key()] == 1 && f[c.key()] == 1
	})
	for _, conn := range open[3:] {
		conn.Close()
	}
	waitFor(t, "in_flight back to 0", 5*time.Second, func() bool {
		f := in.inFlight("pool")
		return f[a.key()] == 0 && f[b.key()] == 0 && f[c.key()] == 0
	})
	l4NoHandlersLeft(t)
}

func TestLayer4LeastOutstandingCountsOpenConnections(t *testing.T) {
	a, b := newL4Backend(t, "a", "127.0.0.1", l4TCP), newL4Backend(t, "b", "127.0.0.1", l4TCP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(l4Group("TCP", map[string]string{"load_balancing.algorithm.type": "least_outstanding_requests"}), map[string]any{"listen": []string{listen}}))
	l4Register(t, in, a, b)

	by := map[string][]*l4Conn{}
	for i := 0; i < 4; i++ {
		conn := l4Dial(t, listen, "")
		by[conn.target] = append(by[conn.target], conn)
	}
	if len(by["a"]) != 2 || len(by["b"]) != 2 {
		t.Fatalf("4 open connections: a %d, b %d, want 2 each", len(by["a"]), len(by["b"]))
	}
	for _, conn := range by["a"] {
		conn.Close()
	}
	waitFor(t, "a's connections to end", 5*time.Second, func() bool { return in.inFlight("pool")[a.key()] == 0 })
	for i := 0; i < 2; i++ {
		if conn := l4Dial(t, listen, ""); conn.target != "a" {
			t.Fatalf("connection %d went to %s, which has 2 open connections; a has none", i, conn.target)
		}
	}
	if f := in.inFlight("pool"); f[a.key()] != 2 || f[b.key()] != 2 {
		t.Fatalf("in_flight %v, want 2 each", f)
	}
}

func TestLayer4HalfClose(t *testing.T) {
	a := newL4Backend(t, "a", "127.0.0.1", l4TCP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(l4Group("TCP", nil), map[string]any{"listen": []string{listen}}))
	l4Register(t, in, a)

	conn := l4Dial(t, listen, "")
	msg := strings.Repeat("half-close ", 20000) // more than the socket buffers hold
	errc := make(chan error, 1)
	go func() {
		_, err := io.WriteString(conn, msg)
		if err == nil {
			err = conn.Conn.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(conn.r) // ends with the backend's own half-close
	if err != nil {
		t.Fatalf("reading after the client half-closed: %v", err)
	}
	if werr := <-errc; werr != nil {
		t.Fatalf("write and CloseWrite: %v", werr)
	}
	if string(got) != msg {
		t.Fatalf("echo after half-close: got %d bytes, want %d", len(got), len(msg))
	}
	waitFor(t, "in_flight back to 0", 5*time.Second, func() bool { return in.inFlight("pool")[a.key()] == 0 })
}

func TestLayer4SourceIPStickiness(t *testing.T) {
	a, b, c := newL4Backend(t, "a", "127.0.0.1", l4TCP), newL4Backend(t, "b", "127.0.0.1", l4TCP), newL4Backend(t, "c", "127.0.0.1", l4TCP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(l4Group("TCP", map[string]string{"stickiness.enabled": "true", "stickiness.type": "source_ip"}), map[string]any{"listen": []string{listen}}))
	l4Register(t, in, a, b, c)

	targetsSeen := map[string]bool{}
	for i := 1; i <= 16; i++ {
		from := fmt.Sprintf("127.0.0.%d", i)
		first := ""
		n := 2
		if i == 1 {
			n = 9
		}
		for j := 0; j < n; j++ {
			conn := l4Dial(t, listen, from)
			if first == "" {
				first = conn.target
			} else if conn.target != first {
				t.Fatalf("client %s went to %s, then to %s", from, first, conn.target)
			}
			conn.Close()
		}
		targetsSeen[first] = true
	}
	if len(targetsSeen) < 2 {
		t.Fatalf("16 client addresses all stuck to the same target: %v", targetsSeen)
	}
}

func TestLayer4DialFailureTriesNextTarget(t *testing.T) {
	a, dead, listen, cfg := withDeadTarget(t)
	in := startCaddy(t, cfg)
	for i := 0; i < 6; i++ {
		conn := l4Dial(t, listen, "")
		conn.echo(t, "retried")
		conn.Close()
	}
	waitFor(t, "in_flight back to 0", 5*time.Second, func() bool {
		f := in.inFlight("pool")
		return f[a.key()] == 0 && f[fmt.Sprintf("127.0.0.1:%d", dead)] == 0
	})
}

func TestLayer4RetriesOff(t *testing.T) {
	_, _, listen, cfg := withDeadTarget(t)
	cfg = strings.Replace(cfg, `"handler":"target_group"`, `"handler":"target_group","retries":-1`, 1)
	if !strings.Contains(cfg, `"retries":-1`) {
		t.Fatalf("config not rewritten: %s", cfg)
	}
	startCaddy(t, cfg)
	// Round robin over two targets, one of them dead: without retries,
	// every other connection is closed unanswered.
	closed := 0
	for i := 0; i < 6; i++ {
		c, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte("ping\n"))
		if n, err := c.Read(make([]byte, 16)); n == 0 || err != nil {
			closed++
		}
		c.Close()
	}
	if closed != 3 {
		t.Fatalf("%d of 6 connections closed with retries off, want 3", closed)
	}
}

func TestLayer4NoRoutableTargetClosesConnection(t *testing.T) {
	listen := l4Listen(t)
	startCaddy(t, l4Config(l4Group("TCP", nil), map[string]any{"listen": []string{listen}}))
	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection to an empty group: read %d bytes, %v; want it closed", n, err)
	}
}

func TestLayer4RefusesHTTPGroup(t *testing.T) {
	in := newInstance(t)
	err := in.load(l4Config(map[string]any{"protocol": "HTTP"}, map[string]any{"listen": []string{l4Listen(t)}}))
	if err == nil {
		caddy.Stop()
		t.Fatal("a layer4 route to an HTTP group loaded")
	}
	if !strings.Contains(err.Error(), "reverse_proxy") {
		t.Fatalf("error does not say what to use instead: %v", err)
	}
}

func TestLayer4Caddyfile(t *testing.T) {
	const cf = `{
	target_groups {
		postgres {
			protocol TCP
			port 5432
		}
		dns {
			protocol UDP
			port 53
		}
	}
	layer4 {
		127.0.0.1:5432 {
			route {
				target_group pool
			}
		}
		udp/127.0.0.1:5353 {
			route {
				target_group dns {
					dial_timeout 3s
					retries off
				}
			}
		}
	}
}
`
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	var cfg struct {
		Apps struct {
			Layer4 struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
					Routes []struct {
						Handle []map[string]any `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"layer4"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range cfg.Apps.Layer4.Servers {
		h, _ := json.Marshal(s.Routes[0].Handle[0])
		got[s.Listen[0]] = string(h)
	}
	want := map[string]string{
		"127.0.0.1:5432":     `{"group":"pool","handler":"target_group"}`,
		"udp/127.0.0.1:5353": `{"dial_timeout":3000000000,"group":"dns","handler":"target_group","retries":-1}`,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("handler of %s: %s, want %s\nadapted: %s", k, got[k], v, adapted)
		}
	}

	for _, bad := range []string{
		"target_group",
		"target_group pool extra",
		"target_group pool {\n\t\t\t\t\tdial_timeout\n\t\t\t\t}",
		"target_group pool {\n\t\t\t\t\tdial_timeout soon\n\t\t\t\t}",
		"target_group pool {\n\t\t\t\t\tport 5432\n\t\t\t\t}",
		"target_group pool {\n\t\t\t\t\tretries 11\n\t\t\t\t}",
		"target_group pool {\n\t\t\t\t\tretries 1\n\t\t\t\t\tretries 2\n\t\t\t\t}",
	} {
		cf := "{\n\tlayer4 {\n\t\t:5432 {\n\t\t\troute {\n\t\t\t\t" + bad + "\n\t\t\t}\n\t\t}\n\t}\n}\n"
		if _, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil); err == nil {
			t.Errorf("%q adapted without error", bad)
		}
	}
}
