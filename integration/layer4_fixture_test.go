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
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// What the end-to-end tests of the layer4 target_group handler share:
// backends that echo over TCP, TLS and UDP, the config of one group behind
// a layer4 server, and clients that check what comes back through it.

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
	in.mustAPI("POST", "/target-groups/pool/targets", map[string]any{"targets": ts}, nil)
	in.waitStates("pool", want)
}

// l4Server is a layer4 server whose one route is the target_group handler
// of group pool, with the fields of server (listen, idle_timeout, or
// routes of its own).
func l4Server(server map[string]any) map[string]any {
	srv := map[string]any{"routes": []any{map[string]any{"handle": []any{tgHandler("pool")}}}}
	for k, v := range server {
		srv[k] = v
	}
	return srv
}

// l4Config is a config with group pool and one layer4 server (l4Server).
func l4Config(group map[string]any, server map[string]any) string {
	return caddyConfig{groups: map[string]any{"pool": group}, layer4: map[string]any{"s": l4Server(server)}}.json()
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

// withDeadTarget is a TCP group of a live echo backend and a port nobody
// listens on, both routable (no health checks), and the config serving it.
func withDeadTarget(t *testing.T) (a *l4Backend, dead int, listen, cfg string) {
	a = newL4Backend(t, "a", "127.0.0.1", l4TCP)
	dead = freePort(t)
	listen = l4Listen(t)
	group := l4Group("TCP", nil)
	group["health_check"] = map[string]any{"enabled": false}
	group["targets"] = []any{a.target(), map[string]any{"id": "127.0.0.1", "port": dead}}
	return a, dead, listen, l4Config(group, map[string]any{"listen": []string{listen}})
}
