package integration_test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/mholt/caddy-l4/modules/l4tls"
	"github.com/pires/go-proxyproto"

	_ "github.com/caddy-targetgroup/caddy-targetgroup/caddyfile"
)

// l4Backend is a real TCP and/or UDP server on loopback. A TCP connection
// gets the backend's name on a line, then an echo of everything it sends;
// when the client half-closes, the backend half-closes too. A datagram is
// answered with "<name>:<payload>" (with PROXY v2 parsing on, with
// "<name>:<source address from the header>:<payload>").
type l4Backend struct {
	name string
	ip   string
	port int

	tcp net.Listener
	udp net.PacketConn

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

type l4Mode int

const (
	l4TCP      l4Mode = iota // TCP echo
	l4TLS                    // TLS echo with an expired self-signed certificate
	l4UDP                    // UDP echo; TCP on the same port accepts health checks only
	l4TCPUDP                 // TCP and UDP echo on one port
	l4UDPProxy               // l4UDP, parsing a PROXY v2 header in front of every datagram
)

func newL4Backend(t *testing.T, name, ip string, mode l4Mode) *l4Backend {
	t.Helper()
	b := &l4Backend{name: name, ip: ip, conns: map[net.Conn]struct{}{}}
	udp := mode == l4UDP || mode == l4TCPUDP || mode == l4UDPProxy
	for i := 0; ; i++ {
		var err error
		port := 0
		if udp {
			if b.udp, err = net.ListenPacket("udp", net.JoinHostPort(ip, "0")); err != nil {
				t.Fatal(err)
			}
			port = b.udp.LocalAddr().(*net.UDPAddr).Port
		}
		b.tcp, err = net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
		if err == nil {
			b.port = b.tcp.Addr().(*net.TCPAddr).Port
			break
		}
		if b.udp != nil {
			b.udp.Close()
		}
		if i == 20 {
			t.Fatalf("no port free for both TCP and UDP: %v", err)
		}
	}
	var tlsCfg *tls.Config
	if mode == l4TLS {
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{expiredCert(t)}}
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := b.tcp.Accept()
			if err != nil {
				return
			}
			if udp && mode != l4TCPUDP {
				c.Close() // a health check
				continue
			}
			b.track(c, true)
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer b.track(c, false)
				defer c.Close()
				var rw net.Conn = c
				if tlsCfg != nil {
					tc := tls.Server(c, tlsCfg)
					if tc.Handshake() != nil {
						return // a health check connects and closes
					}
					rw = tc
				}
				if _, err := fmt.Fprintf(rw, "%s\n", b.name); err != nil {
					return
				}
				if _, err := io.Copy(rw, rw); err != nil {
					return
				}
				_ = rw.(interface{ CloseWrite() error }).CloseWrite()
			}()
		}
	}()
	if udp {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			buf := make([]byte, 65535)
			for {
				n, from, err := b.udp.ReadFrom(buf)
				if err != nil {
					return
				}
				payload, prefix := buf[:n], ""
				if mode == l4UDPProxy {
					r := bufio.NewReader(bytes.NewReader(payload))
					h, err := proxyproto.Read(r)
					if err != nil {
						prefix = "no PROXY header (" + err.Error() + "):"
					} else {
						prefix = h.SourceAddr.String() + ":"
					}
					payload, _ = io.ReadAll(r)
				}
				_, _ = b.udp.WriteTo([]byte(b.name+":"+prefix+string(payload)), from)
			}
		}()
	}
	t.Cleanup(b.close)
	return b
}

func (b *l4Backend) track(c net.Conn, add bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if add {
		b.conns[c] = struct{}{}
	} else {
		delete(b.conns, c)
	}
}

func (b *l4Backend) key() string { return fmt.Sprintf("%s:%d", b.ip, b.port) }

func (b *l4Backend) target() map[string]any { return map[string]any{"id": b.ip, "port": b.port} }

func (b *l4Backend) close() {
	b.tcp.Close()
	if b.udp != nil {
		b.udp.Close()
	}
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// expiredCert is a self-signed certificate that expired yesterday: AWS load
// balancers accept such certificates from targets, and so must we.
func expiredCert(t *testing.T) tls.Certificate {
	cert, _, _ := selfSigned(t, time.Now().Add(-24*time.Hour))
	return cert
}

// selfSigned makes a certificate for 127.0.0.1 and example.test, valid
// until notAfter, also in PEM.
func selfSigned(t *testing.T, notAfter time.Time) (cert tls.Certificate, certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "example.test"},
		NotBefore:    notAfter.Add(-48 * time.Hour),
		NotAfter:     notAfter,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"example.test"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, certPEM, keyPEM
}

// l4Register registers backends with group pool through the admin API.
func l4Register(t *testing.T, in *instance, bs ...*l4Backend) {
	t.Helper()
	ts := make([]map[string]any, len(bs))
	want := map[string]string{}
	for i, b := range bs {
		ts[i] = b.target()
		want[b.key()] = "healthy"
	}
	if code := in.api("POST", "/target-groups/pool/targets", map[string]any{"targets": ts}, nil); code != 200 {
		t.Fatalf("register: status %d", code)
	}
	in.waitStates("pool", want)
}

// l4Config is a config with group pool and a layer4 server on listen whose
// one route is the target_group handler.
func l4Config(t *testing.T, group map[string]any, server map[string]any) string {
	t.Helper()
	srv := map[string]any{"routes": []any{map[string]any{"handle": []any{map[string]any{"handler": "target_group", "group": "pool"}}}}}
	for k, v := range server {
		srv[k] = v
	}
	cfg := map[string]any{
		"admin": map[string]any{"listen": "{ADMIN}"},
		"apps": map[string]any{
			"target_groups": map[string]any{"groups": map[string]any{"pool": group}},
			"layer4":        map[string]any{"servers": map[string]any{"s": srv}},
		},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// l4Group is a group of the protocol with fast health checks.
func l4Group(protocol string, attrs map[string]string) map[string]any {
	g := map[string]any{
		"protocol":     protocol,
		"port":         1,
		"health_check": map[string]any{"interval": "5s", "timeout": "2s"},
	}
	if attrs != nil {
		g["attributes"] = attrs
	}
	return g
}

func l4Listen(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", freePort(t)) }

// l4Conn is a client connection through Caddy; target is the name of the
// backend that answered.
type l4Conn struct {
	net.Conn
	r      *bufio.Reader
	target string
}

// l4Dial connects to Caddy, from the loopback address from (or any), and
// reads the backend's greeting.
func l4Dial(t *testing.T, addr, from string) *l4Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	lc := &l4Conn{Conn: c, r: bufio.NewReader(c)}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := lc.r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the target's greeting through %s: %v", addr, err)
	}
	lc.target = strings.TrimSuffix(line, "\n")
	return lc
}

// echo sends msg and checks that it comes back.
func (c *l4Conn) echo(t *testing.T, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c.r, got); err != nil || string(got) != msg {
		t.Fatalf("echo of %q through %s: got %q, %v", msg, c.target, got, err)
	}
}

// waitClosed blocks until the peer closes the connection (or 10s pass).
func (c *l4Conn) waitClosed(t *testing.T) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.r.Read(make([]byte, 1))
	var ne net.Error
	if n > 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection to %s still open: read %d bytes, %v", c.target, n, err)
	}
}

// inFlight maps "ip:port" to the target's in_flight.
func (in *instance) inFlight(group string) map[string]int64 {
	in.t.Helper()
	out := map[string]int64{}
	for _, e := range in.health(group).Targets {
		out[fmt.Sprintf("%s:%d", e.Target.ID, e.Target.Port)] = e.InFlight
	}
	return out
}

// l4NoHandlersLeft waits until no goroutine of the layer4 handler is left:
// every connection's Handle and relay goroutines must end with it.
func l4NoHandlersLeft(t *testing.T) {
	t.Helper()
	var stacks string
	waitFor(t, "the layer4 handler's goroutines to end", 10*time.Second, func() bool {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "caddy-targetgroup/integration.(*Layer4Handler)") || strings.Contains(g, "caddy-targetgroup/integration.relay") {
				return false
			}
		}
		return true
	})
}

func TestLayer4TCPRoundRobinAndInFlight(t *testing.T) {
	a, b, c := newL4Backend(t, "a", "127.0.0.1", l4TCP), newL4Backend(t, "b", "127.0.0.1", l4TCP), newL4Backend(t, "c", "127.0.0.1", l4TCP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(t, l4Group("TCP", nil), map[string]any{"listen": []string{listen}}))
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
	in := startCaddy(t, l4Config(t, l4Group("TCP", map[string]string{"load_balancing.algorithm.type": "least_outstanding_requests"}), map[string]any{"listen": []string{listen}}))
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
	in := startCaddy(t, l4Config(t, l4Group("TCP", nil), map[string]any{"listen": []string{listen}}))
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

func TestLayer4TLSGroupAcceptsAnyTargetCertificate(t *testing.T) {
	a, b := newL4Backend(t, "a", "127.0.0.1", l4TLS), newL4Backend(t, "b", "127.0.0.1", l4TLS)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(t, l4Group("TLS", nil), map[string]any{"listen": []string{listen}}))
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
	in := startCaddy(t, l4Config(t, l4Group("TCP", nil), map[string]any{"listen": []string{listen}, "routes": []any{map[string]any{
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
	cfg := l4Config(t, l4Group("TCP", nil), map[string]any{"listen": []string{listen}, "routes": []any{map[string]any{
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

// udpExchange sends msg from conn and returns the answer.
func udpExchange(t *testing.T, conn net.Conn, msg string) string {
	t.Helper()
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatalf("udp write: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65535)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("udp answer to %q: %v", msg, err)
	}
	return string(buf[:n])
}

func udpDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestLayer4UDPFlowsArePinned(t *testing.T) {
	a, b := newL4Backend(t, "a", "127.0.0.1", l4UDP), newL4Backend(t, "b", "127.0.0.1", l4UDP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(t, l4Group("UDP", nil), map[string]any{"listen": []string{"udp/" + listen}, "idle_timeout": "2s"}))
	l4Register(t, in, a, b) // health-checked over TCP on the traffic port

	got := map[string]int{}
	for i := 0; i < 4; i++ {
		conn := udpDial(t, listen)
		first := ""
		for j := 0; j < 5; j++ {
			msg := fmt.Sprintf("flow %d datagram %d", i, j)
			answer := udpExchange(t, conn, msg)
			name, payload, _ := strings.Cut(answer, ":")
			if payload != msg {
				t.Fatalf("answer %q to %q", answer, msg)
			}
			if first == "" {
				first = name
			} else if name != first {
				t.Fatalf("flow %d moved from %s to %s", i, first, name)
			}
		}
		got[first]++
	}
	if got["a"] != 2 || got["b"] != 2 {
		t.Fatalf("4 flows over 2 targets: %v, want 2 each", got)
	}
	if f := in.inFlight("pool"); f[a.key()]+f[b.key()] != 4 {
		t.Fatalf("in_flight with 4 live flows: %v", f)
	}
	waitFor(t, "flows to end after the idle timeout", 10*time.Second, func() bool {
		f := in.inFlight("pool")
		return f[a.key()] == 0 && f[b.key()] == 0
	})
	l4NoHandlersLeft(t)
}

// TestLayer4UDPDeregistrationEndsFlow: UDP groups terminate connections at
// the end of the deregistration delay by default, so a live flow to the
// deregistered target ends there and the client's next datagram starts a
// new flow to another target.
func TestLayer4UDPDeregistrationEndsFlow(t *testing.T) {
	a, b := newL4Backend(t, "a", "127.0.0.1", l4UDP), newL4Backend(t, "b", "127.0.0.1", l4UDP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(t, l4Group("UDP", map[string]string{"deregistration_delay.timeout_seconds": "1"}), map[string]any{"listen": []string{"udp/" + listen}, "idle_timeout": "30s"}))
	l4Register(t, in, a, b)

	conn := udpDial(t, listen)
	name, _, _ := strings.Cut(udpExchange(t, conn, "before"), ":")
	gone, stay := a, b
	if name == "b" {
		gone, stay = b, a
	}
	if code := in.api("POST", "/target-groups/pool/targets/deregister", map[string]any{"targets": []any{gone.target()}}, nil); code != 200 {
		t.Fatalf("deregister: status %d", code)
	}
	if got, _, _ := strings.Cut(udpExchange(t, conn, "draining"), ":"); got != gone.name {
		t.Fatalf("the live flow moved to %s while its target drains", got)
	}
	waitFor(t, "the deregistration delay to end", 10*time.Second, func() bool {
		_, ok := in.states("pool")[gone.key()]
		return !ok
	})
	l4NoHandlersLeft(t) // the terminated flow's handler returned, long before the idle timeout
	// A datagram racing caddy-l4's removal of the old flow may be dropped,
	// as UDP allows: ask again until one is answered.
	var got string
	waitFor(t, "an answer from a new flow", 10*time.Second, func() bool {
		if _, err := conn.Write([]byte("after")); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		buf := make([]byte, 100)
		n, err := conn.Read(buf)
		got = string(buf[:n])
		return err == nil
	})
	if got != stay.name+":after" {
		t.Fatalf("after the deregistration delay: %q, want %q", got, stay.name+":after")
	}
	// End the new flow the same way, well before the idle timeout.
	if code := in.api("POST", "/target-groups/pool/targets/deregister", map[string]any{"targets": []any{stay.target()}}, nil); code != 200 {
		t.Fatalf("deregister: status %d", code)
	}
	l4NoHandlersLeft(t)
}

func TestLayer4TCPUDPGroupServesBoth(t *testing.T) {
	a, b := newL4Backend(t, "a", "127.0.0.1", l4TCPUDP), newL4Backend(t, "b", "127.0.0.1", l4TCPUDP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(t, l4Group("TCP_UDP", nil), map[string]any{"listen": []string{listen, "udp/" + listen}, "idle_timeout": "2s"}))
	l4Register(t, in, a, b)

	// One round-robin cursor serves both networks: two TCP connections,
	// then two UDP flows, cover both targets on each.
	seen := map[string]bool{}
	for i := 0; i < 2; i++ {
		conn := l4Dial(t, listen, "")
		conn.echo(t, "tcp")
		seen["tcp "+conn.target] = true
		conn.Close()
	}
	for i := 0; i < 2; i++ {
		answer := udpExchange(t, udpDial(t, listen), "udp")
		name, payload, _ := strings.Cut(answer, ":")
		if payload != "udp" {
			t.Fatalf("udp answer %q", answer)
		}
		seen["udp "+name] = true
	}
	if len(seen) != 4 {
		t.Fatalf("TCP and UDP over both targets: saw %v", seen)
	}
}

func TestLayer4UnhealthyTargetSkippedAndItsConnectionsClosed(t *testing.T) {
	a := newL4Backend(t, "a", "127.0.0.1", l4TCP)
	b := newL4Backend(t, "b", "127.0.0.2", l4TCP)
	// Health checks go to a separate port, on each target's address, so
	// that b can fail them while it still accepts traffic.
	var hcA, hcB net.Listener
	for i := 0; hcB == nil; i++ {
		var err error
		if hcA, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		port := hcA.Addr().(*net.TCPAddr).Port
		if hcB, err = net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port)); err != nil {
			hcA.Close()
			if i == 20 {
				t.Fatal(err)
			}
		}
	}
	for _, l := range []net.Listener{hcA, hcB} {
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	group := l4Group("TCP", nil)
	group["health_check"] = map[string]any{"interval": "5s", "timeout": "2s", "port": hcA.Addr().(*net.TCPAddr).Port, "unhealthy_threshold": 2}
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(t, group, map[string]any{"listen": []string{listen}}))
	l4Register(t, in, a, b)

	var toB *l4Conn
	for toB == nil {
		if conn := l4Dial(t, listen, ""); conn.target == "b" {
			toB = conn
		} else {
			conn.Close()
		}
	}
	hcB.Close()
	waitFor(t, "b to turn unhealthy", 30*time.Second, func() bool { return in.states("pool")[b.key()] == "unhealthy" })
	// target_health_state.unhealthy.connection_termination.enabled is true by default.
	toB.waitClosed(t)
	for i := 0; i < 6; i++ {
		conn := l4Dial(t, listen, "")
		if conn.target != "a" {
			t.Fatalf("connection %d went to the unhealthy target %s", i, conn.target)
		}
		conn.Close()
	}
	waitFor(t, "in_flight back to 0", 5*time.Second, func() bool {
		f := in.inFlight("pool")
		return f[a.key()] == 0 && f[b.key()] == 0
	})
	l4NoHandlersLeft(t)
}

func TestLayer4DeregistrationKeepsThenTerminates(t *testing.T) {
	for _, termination := range []bool{true, false} {
		t.Run(fmt.Sprintf("connection_termination=%v", termination), func(t *testing.T) {
			a, b := newL4Backend(t, "a", "127.0.0.1", l4TCP), newL4Backend(t, "b", "127.0.0.1", l4TCP)
			listen := l4Listen(t)
			const delay = 2 * time.Second
			in := startCaddy(t, l4Config(t, l4Group("TCP", map[string]string{
				"deregistration_delay.timeout_seconds":                fmt.Sprint(int(delay.Seconds())),
				"deregistration_delay.connection_termination.enabled": fmt.Sprint(termination),
			}), map[string]any{"listen": []string{listen}}))
			l4Register(t, in, a, b)

			conn := l4Dial(t, listen, "")
			gone, stay := a, b
			if conn.target == "b" {
				gone, stay = b, a
			}
			start := time.Now()
			if code := in.api("POST", "/target-groups/pool/targets/deregister", map[string]any{"targets": []any{gone.target()}}, nil); code != 200 {
				t.Fatalf("deregister: status %d", code)
			}
			if st, f := in.states("pool")[gone.key()], in.inFlight("pool")[gone.key()]; st != "draining" || f != 1 {
				t.Fatalf("deregistered target: state %q, in_flight %d; want draining, 1", st, f)
			}
			for i := 0; i < 4; i++ {
				if c := l4Dial(t, listen, ""); c.target != stay.name {
					t.Fatalf("new connection %d went to the draining target", i)
				} else {
					c.Close()
				}
			}
			conn.echo(t, "draining but open")

			if termination {
				conn.waitClosed(t)
				if d := time.Since(start); d < delay-100*time.Millisecond {
					t.Fatalf("connection closed %s after deregistration, before the %s delay", d, delay)
				}
			} else {
				waitFor(t, "the deregistration delay to end", 10*time.Second, func() bool {
					_, ok := in.states("pool")[gone.key()]
					return !ok
				})
				conn.echo(t, "deregistered, still open")
			}
			conn.Close()
			l4NoHandlersLeft(t)
		})
	}
}

func TestLayer4SourceIPStickiness(t *testing.T) {
	a, b, c := newL4Backend(t, "a", "127.0.0.1", l4TCP), newL4Backend(t, "b", "127.0.0.1", l4TCP), newL4Backend(t, "c", "127.0.0.1", l4TCP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(t, l4Group("TCP", map[string]string{"stickiness.enabled": "true", "stickiness.type": "source_ip"}), map[string]any{"listen": []string{listen}}))
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

// withDeadTarget is a TCP group of a live echo backend and a port nobody
// listens on, both routable (no health checks), and the config serving it.
func withDeadTarget(t *testing.T) (a *l4Backend, dead int, listen, cfg string) {
	a = newL4Backend(t, "a", "127.0.0.1", l4TCP)
	dead = freePort(t)
	listen = l4Listen(t)
	group := l4Group("TCP", nil)
	group["health_check"] = map[string]any{"enabled": false}
	group["targets"] = []any{a.target(), map[string]any{"id": "127.0.0.1", "port": dead}}
	return a, dead, listen, l4Config(t, group, map[string]any{"listen": []string{listen}})
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

func TestLayer4NoRoutableTargetClosesConnection(t *testing.T) {
	listen := l4Listen(t)
	startCaddy(t, l4Config(t, l4Group("TCP", nil), map[string]any{"listen": []string{listen}}))
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
	err := in.load(l4Config(t, map[string]any{"protocol": "HTTP"}, map[string]any{"listen": []string{l4Listen(t)}}))
	if err == nil {
		caddy.Stop()
		t.Fatal("a layer4 route to an HTTP group loaded")
	}
	if !strings.Contains(err.Error(), "reverse_proxy") {
		t.Fatalf("error does not say what to use instead: %v", err)
	}
}

func TestLayer4ProxyProtocolV2UDP(t *testing.T) {
	a := newL4Backend(t, "a", "127.0.0.1", l4UDPProxy)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(t, l4Group("UDP", map[string]string{"proxy_protocol_v2.enabled": "true"}), map[string]any{"listen": []string{"udp/" + listen}, "idle_timeout": "2s"}))
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
	in := startCaddy(t, l4Config(t, group, map[string]any{"listen": []string{listen}}))
	if code := in.api("POST", "/target-groups/pool/targets", map[string]any{"targets": []any{map[string]any{"id": "127.0.0.1"}}}, nil); code != 200 {
		t.Fatalf("register: status %d", code)
	}
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
