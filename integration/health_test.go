package integration_test

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
)

// End-to-end tests of active health checks and target-group health. Every
// test drives an in-process Caddy through its JSON config, its admin API and
// HTTP traffic only. Checks run every 5s (the minimum interval); the first
// check of a new target runs within about a second, so each test is laid out
// to need as few intervals as possible: one target per behaviour, all
// checked in parallel. The rules themselves (reason codes, thresholds,
// fail open) are targetgroup's unit tests, one round of checks at a time;
// these keep a case of each for the wiring through Caddy.

// hcMode is how an hcBackend answers health checks.
type hcMode int32

const (
	hcOK  hcMode = iota // 200
	hc500               // 500
)

// hcBackend is a loopback HTTP target that answers health checks as its
// mode says. Other requests are answered with its name.
type hcBackend struct {
	name   string
	srv    *httptest.Server
	mode   atomic.Int32
	checks atomic.Int64 // health checks received
	passes atomic.Int64 // health checks answered 200
	hits   atomic.Int64 // proxied requests
	stop   chan struct{}
	// gate, when set, holds passing checks until it is closed.
	gate atomic.Pointer[chan struct{}]
}

func newHCBackend(t *testing.T, name string, mode hcMode) *hcBackend {
	t.Helper()
	b := &hcBackend{name: name, stop: make(chan struct{})}
	b.mode.Store(int32(mode))
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	// Cleanups run last-in first-out: release held checks, then close.
	t.Cleanup(b.srv.Close)
	t.Cleanup(func() { close(b.stop) })
	return b
}

func (b *hcBackend) serve(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.UserAgent(), "Caddy-TargetGroup-HealthChecker") {
		b.hits.Add(1)
		fmt.Fprint(w, b.name)
		return
	}
	b.checks.Add(1)
	switch hcMode(b.mode.Load()) {
	case hcOK:
		if gate := b.gate.Load(); gate != nil {
			select {
			case <-*gate:
			case <-r.Context().Done():
				return
			case <-b.stop:
			}
		}
		b.passes.Add(1)
	case hc500:
		w.WriteHeader(http.StatusInternalServerError)
	}
}

func (b *hcBackend) port() int { return b.srv.Listener.Addr().(*net.TCPAddr).Port }

func (b *hcBackend) key() string { return hcKey(b.port()) }

func hcKey(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

// hcEntry is one target of DescribeTargetHealth.
type hcEntry struct {
	Found                      bool
	Port                       int
	HealthCheckPort            string
	State, Reason, Description string
}

func hcTarget(in *instance, group string, port int) hcEntry {
	in.t.Helper()
	for _, e := range in.health(group).Targets {
		if e.Target.Port == port {
			return hcEntry{true, e.Target.Port, e.HealthCheckPort, e.TargetHealth.State, e.TargetHealth.Reason, e.TargetHealth.Description}
		}
	}
	return hcEntry{}
}

// hcGroupHealth is the answer of GET /target-groups/<g>/health.
type hcGroupHealth struct {
	Healthy         int  `json:"healthy"`
	Unhealthy       int  `json:"unhealthy"`
	Total           int  `json:"total"`
	RoutingFailover bool `json:"routing_failover"`
	DNSFailover     bool `json:"dns_failover"`
}

func hcGetGroupHealth(in *instance, group string) (int, hcGroupHealth) {
	in.t.Helper()
	var h hcGroupHealth
	code := in.api("GET", "/target-groups/"+group+"/health", nil, &h)
	return code, h
}

// hcSpread sends n requests to path and counts the answers by body; every
// answer must be a 200.
func hcSpread(t *testing.T, in *instance, path string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		code, body := in.get(path)
		if code != 200 {
			t.Fatalf("GET %s (request %d): status %d, body %q", path, i, code, body)
		}
		got[body]++
	}
	return got
}

// webConfig is a config with group "web" (its JSON text) serving every
// request.
func webConfig(group string) string {
	return caddyConfig{groups: map[string]any{"web": group}, routes: []any{route("", tgHandler("web"))}}.json()
}

// hcFast is the quickest health check the validation allows.
const hcFast = `"interval": "5s", "timeout": "1s", "healthy_threshold": 2, "unhealthy_threshold": 2`

// TestHealthFirstCheckRule: a new target gets traffic right after its first
// passing check, whatever the healthy threshold.
func TestHealthFirstCheckRule(t *testing.T) {
	b := newHCBackend(t, "a", hcOK)
	gate := make(chan struct{})
	b.gate.Store(&gate) // before any check can arrive
	in := startCaddy(t, webConfig(`{"health_check": {"interval": "5s", "timeout": "2s", "healthy_threshold": 10}}`))
	var reg healthAnswer
	if code := in.api("POST", "/target-groups/web/targets", targets(b.port()), &reg); code != 200 || len(reg.Targets) != 1 {
		t.Fatalf("register: %d %+v", code, reg)
	}
	if st := reg.Targets[0].TargetHealth; st.State != "initial" || (st.Reason != "Elb.RegistrationInProgress" && st.Reason != "Elb.InitialHealthChecking") {
		t.Fatalf("a just-registered target is %+v, want initial", st)
	}
	// While its first check is held by the target, it is initial and gets
	// no traffic.
	waitFor(t, "the first check", 5*time.Second, func() bool { return b.checks.Load() == 1 })
	if e := hcTarget(in, "web", b.port()); e.State != "initial" || e.Reason != "Elb.InitialHealthChecking" {
		t.Errorf("during the first check: %+v, want initial / Elb.InitialHealthChecking", e)
	}
	if code, _ := in.get("/"); code != 503 {
		t.Errorf("before its first check passed the target got traffic (status %d)", code)
	}
	close(gate)
	in.waitStates("web", map[string]string{b.key(): "healthy"})
	if n := b.passes.Load(); n != 1 {
		t.Fatalf("healthy after %d checks, want after the first (healthy_threshold 10 applies to unhealthy targets only)", n)
	}
	if code, body := in.get("/"); code != 200 || body != "a" {
		t.Fatalf("after the first pass: %d %q", code, body)
	}
}

// TestHealthChecksDisabled: every target is unavailable, routable, and
// never checked.
func TestHealthChecksDisabled(t *testing.T) {
	good := newHCBackend(t, "good", hcOK)
	bad := newHCBackend(t, "bad", hc500)
	in := startCaddy(t, webConfig(`{"health_check": {"enabled": false, "path": "/health"}}`))
	in.register("web", good.port(), bad.port())
	for _, b := range []*hcBackend{good, bad} {
		if e := hcTarget(in, "web", b.port()); e.State != "unavailable" || e.Reason != "Target.HealthCheckDisabled" {
			t.Errorf("target %s: %+v, want unavailable / Target.HealthCheckDisabled", b.name, e)
		}
	}
	got := hcSpread(t, in, "/", 20)
	if got["good"] != 10 || got["bad"] != 10 {
		t.Errorf("spread %v, want 10 on each target", got)
	}
	if code, gh := hcGetGroupHealth(in, "web"); code != 200 || gh.Total != 2 || gh.RoutingFailover || gh.DNSFailover {
		t.Errorf("group health: %d %+v", code, gh)
	}
	if n := good.checks.Load() + bad.checks.Load(); n != 0 {
		t.Errorf("%d health checks with health checks disabled", n)
	}
}

// TestHealthEndToEnd: through the scheduler, a target that fails its
// checks turns unhealthy with the AWS reason code, DescribeTargetHealth
// and the group health endpoint say so, and traffic avoids it; a group
// with every target unhealthy fails open, as does one below
// unhealthy_state_routing's percentage; one with only initial targets
// answers 503. The reason codes, thresholds and fail-open rules in detail
// are targetgroup's unit tests (one round of checks at a time); every
// target here fails from its first check, so that one interval is all the
// test waits.
func TestHealthEndToEnd(t *testing.T) {
	ok, code := newHCBackend(t, "ok", hcOK), newHCBackend(t, "code", hc500)
	d1, d2 := newHCBackend(t, "d1", hc500), newHCBackend(t, "d2", hc500)
	p1, p2, p3 := newHCBackend(t, "p1", hcOK), newHCBackend(t, "p2", hc500), newHCBackend(t, "p3", hc500)
	hc := `"health_check": {` + hcFast + `, "path": "/health"}`
	in := startCaddy(t, caddyConfig{
		groups: map[string]any{
			"web": `{` + hc + `}`, "down": `{` + hc + `}`, "fresh": `{` + hc + `}`,
			"pct": `{` + hc + `, "attributes": {"target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage": "50"}}`,
		},
		routes: []any{
			route("/down*", tgHandler("down")), route("/fresh*", tgHandler("fresh")), route("/pct*", tgHandler("pct")),
			route("", tgHandler("web")),
		},
	}.json())
	in.register("web", ok.port(), code.port())
	in.register("down", d1.port(), d2.port())
	in.register("pct", p1.port(), p2.port(), p3.port())

	// A group whose targets have not been checked yet answers 503: it takes
	// two failed checks, five seconds apart, to leave initial.
	in.register("fresh", freePort(t))
	if code, body := in.get("/fresh"); code != 503 || !strings.Contains(body, "1 initial") {
		t.Errorf("only an initial target: %d %q", code, body)
	}
	// No healthy target: the group is unhealthy (NLB: "healthy as long as
	// it has at least one healthy target"), whatever the thresholds say.
	if code, gh := hcGetGroupHealth(in, "fresh"); code != 503 || gh != (hcGroupHealth{Total: 1, DNSFailover: true}) {
		t.Errorf("group health of fresh: %d %+v", code, gh)
	}

	in.waitStates("web", map[string]string{ok.key(): "healthy", code.key(): "unhealthy"})
	if e := hcTarget(in, "web", code.port()); e.Reason != "Target.ResponseCodeMismatch" || !strings.Contains(e.Description, "[500]") {
		t.Errorf("target answering 500: %+v, want Target.ResponseCodeMismatch with [500]", e)
	}
	if n := code.checks.Load(); n < 2 {
		t.Errorf("unhealthy after %d failed checks, want unhealthy_threshold 2", n)
	}
	if e := hcTarget(in, "web", ok.port()); e.State != "healthy" || e.Reason != "" || e.Description != "" {
		t.Errorf("passing target: %+v", e)
	}
	if got := hcSpread(t, in, "/", 10); got["ok"] != 10 {
		t.Errorf("spread %v, want every request on the healthy target", got)
	}
	if n := code.hits.Load(); n != 0 {
		t.Errorf("the unhealthy target got %d requests", n)
	}
	if status, gh := hcGetGroupHealth(in, "web"); status != 200 || gh != (hcGroupHealth{Healthy: 1, Unhealthy: 1, Total: 2}) {
		t.Errorf("group health of web: %d %+v", status, gh)
	}

	in.waitStates("down", map[string]string{d1.key(): "unhealthy", d2.key(): "unhealthy"})
	if code, gh := hcGetGroupHealth(in, "down"); code != 503 || gh != (hcGroupHealth{Unhealthy: 2, Total: 2, RoutingFailover: true, DNSFailover: true}) {
		t.Errorf("group health of down: %d %+v", code, gh)
	}
	if got := hcSpread(t, in, "/down", 20); got["d1"] != 10 || got["d2"] != 10 {
		t.Errorf("every target unhealthy: spread %v, want 10 each (fail open)", got)
	}

	in.waitStates("pct", map[string]string{p1.key(): "healthy", p2.key(): "unhealthy", p3.key(): "unhealthy"})
	if code, gh := hcGetGroupHealth(in, "pct"); code != 200 || gh != (hcGroupHealth{Healthy: 1, Unhealthy: 2, Total: 3, RoutingFailover: true}) {
		t.Errorf("group health of pct: %d %+v", code, gh)
	}
	if got := hcSpread(t, in, "/pct", 30); got["p1"] != 10 || got["p2"] != 10 || got["p3"] != 10 {
		t.Errorf("1 of 3 healthy, below 50%%: spread %v, want 10 each", got)
	}
}

// TestHealthGroupHealthEndpoint: GET /target-groups/<g>/health answers 200
// while enough targets are healthy and 503 below the DNS failover threshold.
func TestHealthGroupHealthEndpoint(t *testing.T) {
	a, b := newHCBackend(t, "a", hcOK), newHCBackend(t, "b", hcOK)
	in := startCaddy(t, webConfig(`{"health_check": {`+hcFast+`}, "attributes": {
		"target_group_health.dns_failover.minimum_healthy_targets.count": "2",
		"target_group_health.unhealthy_state_routing.minimum_healthy_targets.count": "1"}}`))
	dead := freePort(t)
	in.register("web", a.port(), dead)
	in.waitStates("web", map[string]string{a.key(): "healthy"})
	if code, gh := hcGetGroupHealth(in, "web"); code != 503 || !gh.DNSFailover || gh.RoutingFailover || gh.Healthy != 1 || gh.Total != 2 {
		t.Errorf("1 healthy, DNS failover below 2: %d %+v, want 503", code, gh)
	}
	// DNS failover is a signal for DNS; this node still serves.
	if code, body := in.get("/"); code != 200 || body != "a" {
		t.Errorf("during DNS failover: %d %q", code, body)
	}

	in.register("web", b.port())
	in.waitStates("web", map[string]string{b.key(): "healthy"})
	if code, gh := hcGetGroupHealth(in, "web"); code != 200 || gh.DNSFailover || gh.RoutingFailover || gh.Healthy != 2 || gh.Total != 3 {
		t.Errorf("2 healthy: %d %+v, want 200", code, gh)
	}

	// The DNS failover threshold must not be below the routing one.
	var e apiError
	body := map[string]any{"name": "bad-dns", "attributes": map[string]string{
		"target_group_health.dns_failover.minimum_healthy_targets.count":            "1",
		"target_group_health.unhealthy_state_routing.minimum_healthy_targets.count": "2",
	}}
	if code := in.api("POST", "/target-groups/", body, &e); code != 400 || !strings.Contains(e.Error.Message, "dns_failover.minimum_healthy_targets.count") {
		t.Errorf("dns count below routing count: %d %+v", code, e)
	}
}

// TestHealthGRPC: a real gRPC health server as the target of GRPC groups,
// with the standard health service and with the default method, which any
// live gRPC server passes. How a NOT_SERVING answer turns a target
// unhealthy is targetgroup's TestHealthGRPCNotServing.
func TestHealthGRPC(t *testing.T) {
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

	// No route uses the groups: they are health-checked all the same.
	in := startCaddy(t, caddyConfig{groups: map[string]any{
		"std":  `{"protocol_version": "GRPC", "health_check": {` + hcFast + `, "path": "/grpc.health.v1.Health/Check"}}`,
		"dflt": `{"protocol_version": "GRPC", "health_check": {` + hcFast + `}}`,
	}}.json())
	var g struct {
		HealthCheck map[string]any `json:"health_check"`
	}
	in.mustAPI("GET", "/target-groups/dflt", nil, &g)
	if g.HealthCheck["path"] != "/AWS.ALB/healthcheck" || fmt.Sprint(g.HealthCheck["matcher"]) != "map[grpc_code:12]" {
		t.Errorf("GRPC defaults: %v", g.HealthCheck)
	}
	// The standard health service answers 0 when SERVING: that is its default.
	in.mustAPI("GET", "/target-groups/std", nil, &g)
	if fmt.Sprint(g.HealthCheck["matcher"]) != "map[grpc_code:0]" {
		t.Errorf("matcher default with the standard health service: %v", g.HealthCheck["matcher"])
	}
	in.register("std", port)
	in.register("dflt", port)
	in.waitStates("std", map[string]string{hcKey(port): "healthy"})
	in.waitStates("dflt", map[string]string{hcKey(port): "healthy"})

}

// TestHealthCheckPort: checks go to the fixed health_check.port, traffic to
// the target's own port.
func TestHealthCheckPort(t *testing.T) {
	app := newHCBackend(t, "app", hc500) // would fail its checks
	hcsrv := newHCBackend(t, "health", hcOK)
	in := startCaddy(t, webConfig(fmt.Sprintf(`{"health_check": {%s, "port": %d}}`, hcFast, hcsrv.port())))
	in.register("web", app.port())
	in.waitStates("web", map[string]string{app.key(): "healthy"})
	e := hcTarget(in, "web", app.port())
	if e.HealthCheckPort != strconv.Itoa(hcsrv.port()) || e.Port != app.port() {
		t.Errorf("describe target health: %+v, want health_check_port %d and port %d", e, hcsrv.port(), app.port())
	}
	if code, body := in.get("/"); code != 200 || body != "app" {
		t.Errorf("traffic: %d %q, want the traffic port's answer", code, body)
	}
	if app.checks.Load() != 0 || hcsrv.checks.Load() == 0 || hcsrv.hits.Load() != 0 {
		t.Errorf("checks on the traffic port %d, on the health port %d; requests to the health port %d",
			app.checks.Load(), hcsrv.checks.Load(), hcsrv.hits.Load())
	}
	var g struct {
		HealthCheck struct {
			Port any `json:"port"`
		} `json:"health_check"`
	}
	in.mustAPI("GET", "/target-groups/web", nil, &g)
	if g.HealthCheck.Port != float64(hcsrv.port()) {
		t.Errorf("health_check.port = %v, want %d", g.HealthCheck.Port, hcsrv.port())
	}
}

// TestHealthHTTPSSelfSigned: HTTPS checks do not verify the certificate.
func TestHealthHTTPSSelfSigned(t *testing.T) {
	var tlsChecks atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.UserAgent(), "Caddy-TargetGroup-HealthChecker") {
			if r.TLS != nil {
				tlsChecks.Add(1)
			}
			return
		}
		fmt.Fprint(w, "tls")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	in := startCaddy(t, webConfig(`{"protocol": "HTTPS", "health_check": {"protocol": "HTTPS", `+hcFast+`}}`))
	in.register("web", port)
	in.waitStates("web", map[string]string{hcKey(port): "healthy"})
	if tlsChecks.Load() == 0 {
		t.Errorf("no check over TLS")
	}
	if code, body := in.get("/"); code != 200 || body != "tls" {
		t.Errorf("traffic to the HTTPS target: %d %q", code, body)
	}
}
