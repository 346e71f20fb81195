package integration_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// What deregistration does to open layer4 connections and UDP flows:
// they are kept for the deregistration delay and then closed or not, as
// connection termination says. The same closing on a target turning
// unhealthy is targetgroup's TestUnhealthyTargetsConnectionsClosed; these
// tests are its wiring through the handler's connections.

func TestLayer4DeregistrationKeepsThenTerminates(t *testing.T) {
	for _, termination := range []bool{true, false} {
		t.Run(fmt.Sprintf("connection_termination=%v", termination), func(t *testing.T) {
			a, b := newL4Backend(t, "a", "127.0.0.1", l4TCP), newL4Backend(t, "b", "127.0.0.1", l4TCP)
			listen := l4Listen(t)
			const delay = 2 * time.Second
			in := startCaddy(t, l4Config(l4Group("TCP", map[string]string{
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
			in.mustAPI("POST", "/target-groups/pool/targets/deregister", map[string]any{"targets": []any{gone.target()}}, nil)
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

// TestLayer4UDPDeregistrationEndsFlow: UDP groups terminate connections at
// the end of the deregistration delay by default, so a live flow to the
// deregistered target ends there and the client's next datagram starts a
// new flow to another target.
func TestLayer4UDPDeregistrationEndsFlow(t *testing.T) {
	a, b := newL4Backend(t, "a", "127.0.0.1", l4UDP), newL4Backend(t, "b", "127.0.0.1", l4UDP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(l4Group("UDP", map[string]string{"deregistration_delay.timeout_seconds": "1"}), map[string]any{"listen": []string{"udp/" + listen}, "idle_timeout": "30s"}))
	l4Register(t, in, a, b)

	conn := udpDial(t, listen)
	name, _, _ := strings.Cut(udpExchange(t, conn, "before"), ":")
	gone, stay := a, b
	if name == "b" {
		gone, stay = b, a
	}
	in.mustAPI("POST", "/target-groups/pool/targets/deregister", map[string]any{"targets": []any{gone.target()}}, nil)
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
	in.mustAPI("POST", "/target-groups/pool/targets/deregister", map[string]any{"targets": []any{stay.target()}}, nil)
	l4NoHandlersLeft(t)
}
