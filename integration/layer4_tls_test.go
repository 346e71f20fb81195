package integration_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"testing"
	"time"

	_ "github.com/mholt/caddy-l4/modules/l4tls"
)

// The layer4 handler with TLS: TLS groups (any target certificate), and
// the handler behind caddy-l4's tls matcher (passthrough) and tls handler
// (termination).

func TestLayer4TLSGroupAcceptsAnyTargetCertificate(t *testing.T) {
	a, b := newL4Backend(t, "a", "127.0.0.1", l4TLS), newL4Backend(t, "b", "127.0.0.1", l4TLS)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(l4Group("TLS", nil), map[string]any{"listen": []string{listen}}))
	l4Register(t, in, a, b)
	got := map[string]int{}
	for i := 0; i < 4; i++ {
		conn := l4Dial(t, listen, "") // the greeting comes only over TLS
		conn.echo(t, "over tls")
		got[conn.target]++
		conn.Close()
	}
	if got["a"] != 2 || got["b"] != 2 {
		t.Fatalf("spread over TLS targets: %v", got)
	}
}

// TestLayer4AfterTLSMatcher puts the handler behind caddy-l4's tls
// matcher, which reads the ClientHello ahead: those bytes must reach the
// target first (TLS passthrough to a TCP group).
func TestLayer4AfterTLSMatcher(t *testing.T) {
	a := newL4Backend(t, "a", "127.0.0.1", l4TLS)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(l4Group("TCP", nil), map[string]any{"listen": []string{listen}, "routes": []any{map[string]any{
		"match":  []any{map[string]any{"tls": map[string]any{"sni": []string{"example.test"}}}},
		"handle": []any{map[string]any{"handler": "target_group", "group": "pool"}},
	}}}))
	l4Register(t, in, a)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", listen, &tls.Config{ServerName: "example.test", InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS through the passthrough route: %v", err)
	}
	defer c.Close()
	conn := &l4Conn{Conn: c, r: bufio.NewReader(c)}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := conn.r.ReadString('\n'); err != nil || line != "a\n" {
		t.Fatalf("greeting %q, %v", line, err)
	}
	conn.echo(t, "passthrough")
}

// TestLayer4AfterTLSTermination puts the handler behind caddy-l4's tls
// handler: Caddy terminates the client's TLS and proxies the plaintext to a
// TCP group; a close_notify from the client is a half-close.
func TestLayer4AfterTLSTermination(t *testing.T) {
	a := newL4Backend(t, "a", "127.0.0.1", l4TCP)
	_, certPEM, keyPEM := selfSigned(t, time.Now().Add(30*24*time.Hour))
	listen := l4Listen(t)
	cfg := l4Config(l4Group("TCP", nil), map[string]any{"listen": []string{listen}, "routes": []any{map[string]any{
		"handle": []any{map[string]any{"handler": "tls"}, map[string]any{"handler": "target_group", "group": "pool"}},
	}}})
	var m map[string]any
	_ = json.Unmarshal([]byte(cfg), &m)
	m["apps"].(map[string]any)["tls"] = map[string]any{"certificates": map[string]any{"load_pem": []any{map[string]any{"certificate": certPEM, "key": keyPEM}}}}
	js, _ := json.Marshal(m)
	in := startCaddy(t, string(js))
	l4Register(t, in, a)

	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", listen, &tls.Config{ServerName: "example.test", InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS to Caddy: %v", err)
	}
	defer c.Close()
	conn := &l4Conn{Conn: c, r: bufio.NewReader(c)}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := conn.r.ReadString('\n'); err != nil || line != "a\n" {
		t.Fatalf("greeting %q, %v", line, err)
	}
	if _, err := io.WriteString(c, "terminated here"); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(conn.r); err != nil || string(got) != "terminated here" {
		t.Fatalf("echo after close_notify: %q, %v", got, err)
	}
	waitFor(t, "in_flight back to 0", 5*time.Second, func() bool { return in.inFlight("pool")[a.key()] == 0 })
}
