package integration_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The layer4 handler over UDP: a flow per client address, pinned to its
// target until idle, and TCP_UDP groups serving both networks. The cap on
// flows is udpflows_test.go's.

func TestLayer4UDPFlowsArePinned(t *testing.T) {
	a, b := newL4Backend(t, "a", "127.0.0.1", l4UDP), newL4Backend(t, "b", "127.0.0.1", l4UDP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(l4Group("UDP", nil), map[string]any{"listen": []string{"udp/" + listen}, "idle_timeout": "2s"}))
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

func TestLayer4TCPUDPGroupServesBoth(t *testing.T) {
	a, b := newL4Backend(t, "a", "127.0.0.1", l4TCPUDP), newL4Backend(t, "b", "127.0.0.1", l4TCPUDP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(l4Group("TCP_UDP", nil), map[string]any{"listen": []string{listen, "udp/" + listen}, "idle_timeout": "2s"}))
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
