package targetgroup

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
)

// Health checks through real probes against real targets, one round at a
// time (runHealthRound): the reason codes AWS reports, the thresholds, fail
// open and connection termination. The end-to-end tests keep one case of
// each for the wiring through Caddy, on the real scheduler.

// checkMode is how a checkTarget answers health checks.
type checkMode int32

const (
	answer200      checkMode = iota
	answer500                // a status the matcher refuses
	answerNever              // no answer until the checker gives up
	answerRedirect           // 302 to a path that would answer 200
)

// checkTarget is a loopback HTTP target whose answer to health checks the
// test switches; close shuts its port.
type checkTarget struct {
	srv      *httptest.Server
	mode     atomic.Int32
	checks   atomic.Int64 // health checks received
	passes   atomic.Int64 // answered 200
	followed atomic.Int64 // requests to the redirect's location
	stop     chan struct{}
}

func newCheckTarget(t *testing.T, mode checkMode) *checkTarget {
	t.Helper()
	c := &checkTarget{stop: make(chan struct{})}
	c.mode.Store(int32(mode))
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/followed" {
			c.followed.Add(1)
			return
		}
		c.checks.Add(1)
		switch checkMode(c.mode.Load()) {
		case answer200:
			c.passes.Add(1)
		case answer500:
			w.WriteHeader(http.StatusInternalServerError)
		case answerNever:
			select {
			case <-r.Context().Done():
			case <-c.stop:
			}
		case answerRedirect:
			http.Redirect(w, r, "/followed", http.StatusFound)
		}
	}))
	// Cleanups run last-in first-out: release hanging checks, then close.
	t.Cleanup(c.srv.Close)
	t.Cleanup(func() { close(c.stop) })
	return c
}

func (c *checkTarget) set(m checkMode) { c.mode.Store(int32(m)) }

func (c *checkTarget) port() int { return c.srv.Listener.Addr().(*net.TCPAddr).Port }

func (c *checkTarget) config() TargetConfig { return TargetConfig{ID: "127.0.0.1", Port: c.port()} }

// health is the target health DescribeTargetHealth gives for port.
func (l *lifecycle) health(port int) TargetHealth {
	l.t.Helper()
	d := l.g.DescribeTargetHealth(TargetKey{"127.0.0.1", port})
	if len(d) != 1 {
		l.t.Fatalf("target %d described %d times", port, len(d))
	}
	return d[0].TargetHealth
}

// expectHealth fails the test unless port is in state with reason, and its
// description mentions mention.
func (l *lifecycle) expectHealth(port int, state State, reason, mention string) {
	l.t.Helper()
	if h := l.health(port); h.State != state || h.Reason != reason || !strings.Contains(h.Description, mention) {
		l.t.Fatalf("target %d is %+v, want %s (%s) mentioning %q", port, h, state, reason, mention)
	}
}

func routablePorts(g *Group) map[int]bool {
	out := map[int]bool{}
	for _, t := range g.Snapshot().Routable {
		out[t.cfg.Port] = true
	}
	return out
}

// TestHealthReasonCodes: targets that turn from passing to a 500, to
// hanging past the timeout and to a closed port become unhealthy after
// unhealthy_threshold checks, with the AWS reason codes; a 302 is a code
// mismatch, never followed; a target that recovers is healthy again after
// healthy_threshold passes, not at its first. Only healthy targets are
// routable, and the group's health counts them.
func TestHealthReasonCodes(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{HealthCheck: &HealthCheckConfig{
		Path: "/health", Interval: Duration(5 * time.Second), Timeout: Duration(time.Second), HealthyThreshold: 2, UnhealthyThreshold: 2,
	}})
	ok, code, hang, closed := newCheckTarget(t, answer200), newCheckTarget(t, answer200), newCheckTarget(t, answer200), newCheckTarget(t, answer200)
	redirect, flip := newCheckTarget(t, answerRedirect), newCheckTarget(t, answer500)
	all := []*checkTarget{ok, code, hang, closed, redirect, flip}
	for _, c := range all {
		l.register(c.config())
	}

	runHealthRound(l.g)
	for _, c := range []*checkTarget{ok, code, hang, closed} {
		l.expectHealth(c.port(), StateHealthy, "", "")
	}
	code.set(answer500)
	hang.set(answerNever)
	closed.srv.Close()

	// The flipping target fails its first two checks, and is unhealthy
	// after the second.
	l.expectHealth(flip.port(), StateInitial, ReasonInitialHealthChecking, "")
	runHealthRound(l.g)
	l.expectHealth(flip.port(), StateUnhealthy, ReasonResponseCodeMismatch, "[500]")
	if n := flip.checks.Load(); n != 2 {
		t.Fatalf("unhealthy after %d failed checks, want unhealthy_threshold 2", n)
	}
	// One failure is not enough to leave healthy.
	for _, c := range []*checkTarget{code, hang, closed} {
		l.expectHealth(c.port(), StateHealthy, "", "")
	}
	flip.set(answer200)

	runHealthRound(l.g)
	l.expectHealth(code.port(), StateUnhealthy, ReasonResponseCodeMismatch, "[500]")
	l.expectHealth(hang.port(), StateUnhealthy, ReasonTimeout, "")
	if h := l.health(hang.port()); h.Description == "" {
		t.Errorf("timeout has no description: %+v", h)
	}
	l.expectHealth(closed.port(), StateUnhealthy, ReasonFailedHealthChecks, "connection refused")
	l.expectHealth(redirect.port(), StateUnhealthy, ReasonResponseCodeMismatch, "[302]")
	// The recovering target is unhealthy until its second pass, and keeps
	// the reason of its last failure meanwhile.
	l.expectHealth(flip.port(), StateUnhealthy, ReasonResponseCodeMismatch, "[500]")
	runHealthRound(l.g)
	l.expectHealth(flip.port(), StateHealthy, "", "")
	if n := flip.passes.Load(); n != 2 {
		t.Fatalf("the recovered target is healthy after %d passing checks, want healthy_threshold 2", n)
	}
	if n := redirect.followed.Load(); n != 0 {
		t.Errorf("a health check followed the redirect %d times", n)
	}
	l.expectHealth(ok.port(), StateHealthy, "", "")

	if got := routablePorts(l.g); len(got) != 2 || !got[ok.port()] || !got[flip.port()] {
		t.Errorf("routable %v, want the ok and the recovered target", got)
	}
	if h := l.g.Health(); h != (GroupHealth{Healthy: 2, Unhealthy: 4, Total: 6}) {
		t.Errorf("group health %+v", h)
	}
}

// TestHealthFailOpen: with every checked target unhealthy, every one of
// them is routable and the group is in routing and DNS failover; with only
// initial targets nothing is routable; below unhealthy_state_routing's
// percentage every checked target is routable, while DNS failover (at its
// default) is off as long as one target is healthy.
func TestHealthFailOpen(t *testing.T) {
	hc := &HealthCheckConfig{Path: "/health", Interval: Duration(5 * time.Second), Timeout: Duration(time.Second), HealthyThreshold: 2, UnhealthyThreshold: 2}
	down := newLifecycle(t, &GroupConfig{HealthCheck: hc}, named("down"))
	d1, d2 := newCheckTarget(t, answer500), newCheckTarget(t, answer500)
	down.register(d1.config(), d2.config())
	pct := newLifecycle(t, &GroupConfig{HealthCheck: hc, Attributes: map[string]string{AttrRoutingFailoverPercentage: "50"}}, named("pct"))
	p1, p2, p3 := newCheckTarget(t, answer200), newCheckTarget(t, answer500), newCheckTarget(t, answer500)
	pct.register(p1.config(), p2.config(), p3.config())

	// Before two failed checks, five seconds apart, nothing has left
	// initial: nothing is routable, and the group is unhealthy.
	runHealthRound(down.g)
	if s := down.g.Snapshot(); len(s.Routable) != 0 || !strings.Contains(s.NoTargetReason("down"), "2 initial") {
		t.Fatalf("only initial targets: routable %v, %q", routablePorts(down.g), s.NoTargetReason("down"))
	}
	if h := down.g.Health(); h != (GroupHealth{Total: 2, DNSFailover: true}) {
		t.Fatalf("health with only initial targets %+v", h)
	}

	runHealthRound(down.g)
	down.expectHealth(d1.port(), StateUnhealthy, ReasonResponseCodeMismatch, "[500]")
	down.expectHealth(d2.port(), StateUnhealthy, ReasonResponseCodeMismatch, "[500]")
	if s := down.g.Snapshot(); !s.FailOpen || len(s.Routable) != 2 {
		t.Fatalf("every target unhealthy: routable %v fail open %v, want both (fail open)", routablePorts(down.g), s.FailOpen)
	}
	if h := down.g.Health(); h != (GroupHealth{Unhealthy: 2, Total: 2, RoutingFailover: true, DNSFailover: true}) {
		t.Fatalf("health of down %+v", h)
	}

	runHealthRound(pct.g)
	runHealthRound(pct.g)
	pct.expectHealth(p1.port(), StateHealthy, "", "")
	if s := pct.g.Snapshot(); !s.FailOpen || len(s.Routable) != 3 {
		t.Fatalf("1 of 3 healthy, below 50%%: routable %v fail open %v, want all 3", routablePorts(pct.g), s.FailOpen)
	}
	if h := pct.g.Health(); h != (GroupHealth{Healthy: 1, Unhealthy: 2, Total: 3, RoutingFailover: true}) {
		t.Fatalf("health of pct %+v", h)
	}
}

// TestHealthGRPCNotServing: against a real gRPC health server, a target of
// the standard health service turns unhealthy once it reports NOT_SERVING,
// while a target checked with the default (unimplemented) method stays
// healthy: any live gRPC server passes that, whatever its health service
// says.
func TestHealthGRPCNotServing(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	grpc_health_v1.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	port := lis.Addr().(*net.TCPAddr).Port

	timing := HealthCheckConfig{Interval: Duration(5 * time.Second), Timeout: Duration(time.Second), HealthyThreshold: 2, UnhealthyThreshold: 2}
	stdHC, dfltHC := timing, timing
	stdHC.Path = "/grpc.health.v1.Health/Check"
	std := newLifecycle(t, &GroupConfig{ProtocolVersion: "GRPC", HealthCheck: &stdHC}, named("std"))
	dflt := newLifecycle(t, &GroupConfig{ProtocolVersion: "GRPC", HealthCheck: &dfltHC}, named("dflt"))
	for _, l := range []*lifecycle{std, dflt} {
		l.register(local(port)...)
		runHealthRound(l.g)
		l.expectHealth(port, StateHealthy, "", "")
	}

	hs.SetServingStatus("", grpc_health_v1.HealthCheckResponse_NOT_SERVING)
	runHealthRound(std.g)
	std.expectHealth(port, StateHealthy, "", "")
	for range 2 {
		runHealthRound(std.g)
		runHealthRound(dflt.g)
	}
	std.expectHealth(port, StateUnhealthy, ReasonFailedHealthChecks, "NOT_SERVING")
	dflt.expectHealth(port, StateHealthy, "", "")
}

// closeRecorder is a tracked connection that counts its closes.
type closeRecorder struct{ n atomic.Int32 }

func (c *closeRecorder) Close() error { c.n.Add(1); return nil }

// TestUnhealthyTargetsConnectionsClosed: in a TCP group (connection
// termination on unhealthy is on by default) a target that fails its
// checks leaves the routable set and its open connections are closed;
// the connections of the healthy target stay.
func TestUnhealthyTargetsConnectionsClosed(t *testing.T) {
	listen := func() (net.Listener, int) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		return ln, ln.Addr().(*net.TCPAddr).Port
	}
	_, a := listen()
	lb, b := listen()
	l := newLifecycle(t, &GroupConfig{Protocol: ProtocolTCP, Port: 1, HealthCheck: &HealthCheckConfig{
		Interval: Duration(5 * time.Second), Timeout: Duration(2 * time.Second), UnhealthyThreshold: 2,
	}})
	l.register(local(a, b)...)
	runHealthRound(l.g)
	if got := routablePorts(l.g); len(got) != 2 {
		t.Fatalf("routable %v after passing checks", got)
	}
	toA, toB := &closeRecorder{}, &closeRecorder{}
	defer l.target(a).TrackConn(toA)()
	defer l.target(b).TrackConn(toB)()

	lb.Close()
	runHealthRound(l.g)
	if toB.n.Load() != 0 || !routablePorts(l.g)[b] {
		t.Fatal("one failed check took the target out")
	}
	runHealthRound(l.g)
	l.expectHealth(b, StateUnhealthy, ReasonFailedHealthChecks, "")
	if got := routablePorts(l.g); len(got) != 1 || !got[a] {
		t.Fatalf("routable %v, want only the healthy target", got)
	}
	if n := toB.n.Load(); n != 1 {
		t.Fatalf("the unhealthy target's connection was closed %d times, want once", n)
	}
	if n := toA.n.Load(); n != 0 {
		t.Fatalf("the healthy target's connection was closed %d times", n)
	}
}
