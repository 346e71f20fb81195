package integration_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// PROXY protocol v2 in front of what the layer4 handler sends: a header
// with the client's address on every UDP datagram and on TCP, read by
// HAProxy.

func TestLayer4ProxyProtocolV2UDP(t *testing.T) {
	a := newL4Backend(t, "a", "127.0.0.1", l4UDPProxy)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(l4Group("UDP", map[string]string{"proxy_protocol_v2.enabled": "true"}), map[string]any{"listen": []string{"udp/" + listen}, "idle_timeout": "2s"}))
	l4Register(t, in, a)
	conn := udpDial(t, listen)
	for i := 0; i < 3; i++ {
		want := fmt.Sprintf("a:%s:datagram %d", conn.LocalAddr(), i)
		if got := udpExchange(t, conn, fmt.Sprintf("datagram %d", i)); got != want {
			t.Fatalf("target saw %q, want %q", got, want)
		}
	}
}

// TestLayer4ProxyProtocolV2HAProxy has HAProxy, a real PROXY protocol
// parser, report the addresses it read from the header that Caddy sent.
func TestLayer4ProxyProtocolV2HAProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs HAProxy; skipped with -short")
	}
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is not installed: apt-get install haproxy (CI installs it)")
	}
	hport := freePort(t)
	cfgPath := filepath.Join(t.TempDir(), "haproxy.cfg")
	cfg := fmt.Sprintf(`global
	maxconn 100
defaults
	mode http
	timeout connect 5s
	timeout client 10s
	timeout server 10s
frontend fe
	bind 127.0.0.1:%d accept-proxy
	http-request return status 200 content-type text/plain lf-string "src=%%[src]:%%[src_port] dst=%%[dst]:%%[dst_port]"
`, hport)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, "haproxy", exec.Command(bin, "-db", "-f", cfgPath))
	waitFor(t, "haproxy to listen", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", hport))
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	listen := l4Listen(t)
	group := l4Group("TCP", map[string]string{"proxy_protocol_v2.enabled": "true"})
	group["port"] = hport
	in := startCaddy(t, l4Config(group, map[string]any{"listen": []string{listen}}))
	in.mustAPI("POST", "/target-groups/pool/targets", map[string]any{"targets": []any{map[string]any{"id": "127.0.0.1"}}}, nil)
	in.waitStates("pool", map[string]string{fmt.Sprintf("127.0.0.1:%d", hport): "healthy"})

	// From 127.0.0.2, so that the client's address differs from the one
	// Caddy connects to HAProxy from.
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	c, err := d.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading HAProxy's answer: %v", err)
	}
	_, body, _ := strings.Cut(string(resp), "\r\n\r\n")
	if want := fmt.Sprintf("src=%s dst=%s", c.LocalAddr(), listen); body != want {
		t.Fatalf("HAProxy read the PROXY header as %q, want %q (response %q)", body, want, resp)
	}
}
