package integration_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// flowCost is what the process holds: heap in use, goroutine stacks, file
// descriptors and goroutines.
type flowCost struct {
	heap, stacks uint64
	fds          int
	goroutines   int
}

func measureCost(t *testing.T) flowCost {
	t.Helper()
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	c := flowCost{heap: ms.HeapInuse, stacks: ms.StackInuse, goroutines: runtime.NumGoroutine(), fds: -1}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		c.fds = len(fds)
	}
	return c
}

// openFlows starts n UDP flows through listen, each from a source port of
// its own on the loopback address from, and returns once every one has
// been answered. The client sockets are closed only once all are answered
// (a port closed earlier could be reused for a later flow, which would
// then be the same flow), so that only Caddy's side of each flow stays.
// Each call should use an address of its own for the same reason.
func openFlows(t *testing.T, listen, from string, n int) {
	t.Helper()
	if err := sendFlows(listen, from, n, 16); err != nil {
		t.Fatal(err)
	}
}

// sendFlows is openFlows with that many clients sending at once; it may
// run outside the test's goroutine.
func sendFlows(listen, from string, n, workers int) error {
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range conns {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("udp", listen)
		if err != nil {
			return err
		}
		conns[i] = c
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := askUntilAnswered(conns[i], fmt.Sprintf("flow %d", i)); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// askUntilAnswered sends msg until it is answered: a datagram may be
// dropped while a burst of new flows is being set up.
func askUntilAnswered(c net.Conn, msg string) error {
	buf := make([]byte, 2048)
	for attempt := 0; attempt < 10; attempt++ {
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(buf); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s: no answer from %s", msg, c.LocalAddr())
}

// TestUDPFlowCost measures what one live UDP flow costs Caddy: 1000 flows
// from distinct source ports against an in-process Caddy.
func TestUDPFlowCost(t *testing.T) {
	const n = 1000
	a := newL4Backend(t, "a", "127.0.0.1", l4UDP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(l4Group("UDP", endAtDeregistration), map[string]any{"listen": []string{"udp/" + listen}, "idle_timeout": "120s"}))
	l4Register(t, in, a)
	openFlows(t, listen, "127.0.0.2", 20) // warm up pools and the scheduler
	waitFor(t, "warm-up flows to be live", 10*time.Second, func() bool { return in.inFlight("pool")[a.key()] == 20 })

	before := measureCost(t)
	openFlows(t, listen, "127.0.0.3", n)
	waitFor(t, "every flow to be live", 20*time.Second, func() bool { return in.inFlight("pool")[a.key()] == n+20 })
	after := measureCost(t)

	heap := (float64(after.heap) - float64(before.heap)) / n
	stacks := (float64(after.stacks) - float64(before.stacks)) / n
	gs := float64(after.goroutines-before.goroutines) / n
	t.Logf("per UDP flow: %.1f KiB heap in use, %.1f KiB of goroutine stacks, %.2f goroutines", heap/1024, stacks/1024, gs)
	fds := float64(after.fds-before.fds) / n
	if before.fds >= 0 {
		t.Logf("per UDP flow: %.2f file descriptors", fds)
	}
	// Before the target side's buffers were pooled, a flow held 80 KiB of
	// heap; what is left is the client side's buffer (caddy-l4 hands a
	// datagram only to a read that holds one) and caddy-l4's own state.
	if heap > 32<<10 || gs > 2.1 || before.fds >= 0 && fds > 1.1 {
		t.Errorf("a UDP flow costs more than 32 KiB of heap, 2 goroutines or 1 file descriptor")
	}
	endFlows(t, in, a)
}

// endAtDeregistration are the attributes of a UDP group whose flows end
// as soon as their target is deregistered (see endFlows).
var endAtDeregistration = map[string]string{"deregistration_delay.timeout_seconds": "0"}

// endFlows deregisters the backends from group pool, which ends their
// flows at once (endAtDeregistration), and waits for every handler to
// return: otherwise they would outlive the test until the idle timeout,
// even once Caddy is stopped.
func endFlows(t *testing.T, in *instance, bs ...*l4Backend) {
	t.Helper()
	ts := make([]any, len(bs))
	for i, b := range bs {
		ts[i] = b.target()
	}
	in.mustAPI("POST", "/target-groups/pool/targets/deregister", map[string]any{"targets": ts}, nil)
	l4NoHandlersLeft(t)
}

// udpCapConfig is a UDP group pool with max_udp_flows_per_group set, behind
// two layer4 servers, on listen and listen2.
func udpCapConfig(limit int, listen, listen2 string) string {
	return caddyConfig{
		groups: map[string]any{"pool": l4Group("UDP", endAtDeregistration)},
		app:    map[string]any{"max_udp_flows_per_group": limit},
		layer4: map[string]any{
			"s":  l4Server(map[string]any{"listen": []string{"udp/" + listen}, "idle_timeout": "60s"}),
			"s2": l4Server(map[string]any{"listen": []string{"udp/" + listen2}, "idle_timeout": "60s"}),
		},
	}.json()
}

// peak keeps the highest value it has seen.
type peak struct{ v atomic.Int64 }

func (p *peak) see(v int64) {
	for {
		old := p.v.Load()
		if v <= old || p.v.CompareAndSwap(old, v) {
			return
		}
	}
}

// TestUDPFlowCapHolds: many source ports, through two layer4 servers that
// route to one group, never make the group hold more than
// max_udp_flows_per_group flows or in_flight; new clients are answered,
// and so is a client whose flow was closed when it sends again.
func TestUDPFlowCapHolds(t *testing.T) {
	const limit = 20
	a := newL4Backend(t, "a", "127.0.0.1", l4UDP)
	listen, listen2 := l4Listen(t), l4Listen(t)
	in := startCaddy(t, udpCapConfig(limit, listen, listen2))
	l4Register(t, in, a)
	g := targetgroup.Current().Group("pool")

	// The first client's flow is the least recently active once the others
	// come, and is closed.
	first := udpDial(t, listen)
	if got := udpExchange(t, first, "first"); got != "a:first" {
		t.Fatalf("answer %q", got)
	}

	var live, inFlight peak
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			live.see(int64(g.UDPFlows()))
			var n int64
			for _, t := range g.Snapshot().Routable {
				n += t.InFlight()
			}
			inFlight.see(n)
			runtime.Gosched()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, l := range []struct{ listen, from string }{{listen, "127.0.0.4"}, {listen2, "127.0.0.5"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- sendFlows(l.listen, l.from, 300, 16)
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if live.v.Load() > limit || inFlight.v.Load() > limit {
		t.Fatalf("with max_udp_flows_per_group %d: up to %d live flows and %d in flight", limit, live.v.Load(), inFlight.v.Load())
	}
	if live.v.Load() < limit {
		t.Fatalf("600 new flows and never more than %d live: the cap was not reached", live.v.Load())
	}
	if f := in.inFlight("pool")[a.key()]; f > limit {
		t.Fatalf("DescribeTargetHealth in_flight %d over the cap %d", f, limit)
	}
	// The first flow was closed; its client's next datagram starts a new one.
	if got := udpExchange(t, first, "again"); got != "a:again" {
		t.Fatalf("answer %q to a client whose flow was closed", got)
	}
	if got := udpExchange(t, udpDial(t, listen2), "new"); got != "a:new" {
		t.Fatalf("answer %q to a new client", got)
	}
	endFlows(t, in, a)
}

// TestUDPFlowCapBinary checks the cap from outside, against Caddy built as
// users build it: DescribeTargetHealth never shows more flows in flight
// than max_udp_flows_per_group while many source ports send, and a new
// client still gets answers.
func TestUDPFlowCapBinary(t *testing.T) {
	t.Parallel()
	const limit = 5
	a := newL4Backend(t, "a", "127.0.0.1", l4UDP)
	p := newCaddyProc(t)
	listen := l4Listen(t)
	p.start(p.expand(caddyConfig{
		groups: map[string]any{"pool": map[string]any{
			"protocol":     "UDP",
			"port":         a.port,
			"health_check": map[string]any{"interval": "5s", "timeout": "2s"},
			"targets":      []any{map[string]any{"id": a.ip}},
		}},
		app:    map[string]any{"max_udp_flows_per_group": limit},
		layer4: map[string]any{"dns": l4Server(map[string]any{"listen": []string{"udp/" + listen}, "idle_timeout": "60s"})},
	}.json()))
	in := &instance{t: t, admin: p.admin}
	in.waitStates("pool", map[string]string{a.key(): "healthy"})

	done := make(chan error, 1)
	go func() { done <- sendFlows(listen, "127.0.0.6", 200, 4) }()
	var most int64
	for sending := true; sending; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			sending = false
		default:
		}
		most = max(most, in.inFlight("pool")[a.key()])
	}
	if most > limit {
		t.Fatalf("in_flight reached %d with max_udp_flows_per_group %d", most, limit)
	}
	if most < limit {
		t.Fatalf("200 new flows and in_flight never above %d: the cap was not reached", most)
	}
	if got := udpExchange(t, udpDial(t, listen), "new"); got != "a:new" {
		t.Fatalf("answer %q to a new client", got)
	}
}
