package integration_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/mholt/caddy-l4/modules/l4proxy"
)

// BenchmarkLayer4 compares the target_group handler with caddy-l4's own
// proxy handler (a static upstream), in one Caddy, on the same TCP echo
// backend: throughput through one connection, and new connections per
// second (connect, one byte each way, close).
//
//	go test -run '^$' -bench Layer4 ./integration/
func BenchmarkLayer4(b *testing.B) {
	echo := benchEcho(b)
	ours, theirs := benchListen(b), benchListen(b)
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": b.TempDir()},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{
			"target_groups": map[string]any{"groups": map[string]any{"bench": map[string]any{
				"protocol":     "TCP",
				"port":         echo.Addr().(*net.TCPAddr).Port,
				"health_check": map[string]any{"enabled": false},
				"targets":      []any{map[string]any{"id": "127.0.0.1"}},
			}}},
			"layer4": map[string]any{"servers": map[string]any{
				"target_group": map[string]any{"listen": []string{ours}, "routes": []any{map[string]any{"handle": []any{
					map[string]any{"handler": "target_group", "group": "bench"},
				}}}},
				"l4proxy": map[string]any{"listen": []string{theirs}, "routes": []any{map[string]any{"handle": []any{
					map[string]any{"handler": "proxy", "upstreams": []any{map[string]any{"dial": []string{echo.Addr().String()}}}},
				}}}},
			}},
		},
	}
	js, _ := json.Marshal(cfg)
	if err := caddy.Load(js, true); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = caddy.Stop() })

	for _, h := range []struct{ name, addr string }{{"target_group", ours}, {"l4proxy", theirs}} {
		b.Run("throughput/"+h.name, func(b *testing.B) { benchThroughput(b, h.addr) })
	}
	for _, h := range []struct{ name, addr string }{{"target_group", ours}, {"l4proxy", theirs}} {
		b.Run("connections/"+h.name, func(b *testing.B) { benchConnections(b, h.addr) })
	}
}

const benchChunk = 64 << 10

func benchThroughput(b *testing.B, addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunk := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	errc := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < b.N && err == nil; i++ {
			_, err = c.Write(chunk)
		}
		errc <- err
	}()
	if _, err := io.CopyN(io.Discard, c, int64(b.N)*benchChunk); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}

func benchConnections(b *testing.B, addr string) {
	one := []byte{'x'}
	buf := make([]byte, 2)
	start := time.Now()
	for i := 0; i < b.N; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(one); err != nil {
			b.Fatal(err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		if n, err := io.ReadAtLeast(c, buf, 1); err != nil || n != 1 {
			b.Fatalf("echo: %d bytes, %v", n, err)
		}
		c.Close()
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "conns/s")
}

// benchEcho is a TCP echo server that half-closes when its client does.
func benchEcho(b *testing.B) net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if _, err := io.Copy(c, struct{ io.Reader }{c}); err == nil {
					_ = c.(*net.TCPConn).CloseWrite()
				}
			}()
		}
	}()
	b.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return l
}

func benchListen(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprintf("127.0.0.1:%d", l.Addr().(*net.TCPAddr).Port)
}
