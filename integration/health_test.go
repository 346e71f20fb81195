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
// checked in parallel.

// hcMode is how an hcBackend answers health checks.
type hcMode int32

const (
	hcOK       hcMode = iota // 200
	hc500                    // 500
	hcHang                   // no answer until the checker gives up
	hcRedirect               // 302 to a path that would answer 200
	hcClosed                 // the port is closed (one way: the server is shut)
)

// hcBackend is a loopback HTTP target whose answer to health checks the test
// switches atomically. Other requests are answered with its name.
type hcBackend struct {
	name     string
	srv      *httptest.Server
	mode     atomic.Int32
	checks   atomic.Int64 // health checks received
	passes   atomic.Int64 // health checks answered 200
	followed atomic.Int64 // requests to the redirect's location
	hits     atomic.Int64 // proxied requests
	stop     chan struct{}
	// gate, when set, holds passing checks until it is closed.
	gate atomic.Pointer[chan struct{}]
}

func newHCBackend(t *testing.T, name string, mode hcMode) *hcBackend {
	t.Helper()
	b := &hcBackend{name: name, stop: make(chan struct{})}
	b.mode.Store(int32(hcOK))
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	// Cleanups run last-in first-out: release hanging checks, then close.
	t.Cleanup(b.srv.Close)
	t.Cleanup(func() { close(b.stop) })
	b.set(mode)
	return b
}

func (b *hcBackend) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/followed" {
		b.followed.Add(1)
		return
	}
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
	case hcHang:
		select {
		case <-r.Context().Done():
		case <-b.stop:
		}
	case hcRedirect:
		http.Redirect(w, r, "/followed", http.StatusFound)
	}
}

func (b *hcBackend) set(m hcMode) {
	b.mode.Store(int32(m))
	if m == hcClosed {
		b.srv.Close()
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

// hcConfig is a config with the given groups (JSON members of "groups") and
// HTTP routes (JSON array elements).
func hcConfig(groups, routes string) string {
	cfg := `{"admin": {"listen": "{ADMIN}"}, "apps": {"target_groups": {"groups": {` + groups + `}}`
	if routes != "" {
		cfg += `, "http": {"servers": {"s": {"listen": ["{HTTP}"], "automatic_https": {"disable": true}, "routes": [` + routes + `]}}}`
	}
	return cfg + `}}`
}

// hcRoute routes requests whose path starts with prefix to group; an empty
// prefix matches everything.
func hcRoute(prefix, group string) string {
	h := `"handle": [{"handler": "target_group", "group": "` + group + `"}]`
	if prefix == "" {
		return `{` + h + `}`
	}
	return `{"match": [{"path": ["` + prefix + `*"]}], ` + h + `}`
}

// hcFast is the quickest health check the validation allows.
const hcFast = `"interval": "5s", "timeout": "1s", "healthy_threshold": 2, "unhealthy_threshold": 2`

func hcRegister(t *testing.T, in *instance, group string, ports ...int) {
	t.Helper()
	var e apiError
	if code := in.api("POST", "/target-groups/"+group+"/targets", targets(ports...), &e); code != 200 {
		t.Fatalf("register %v in %s: status %d %+v", ports, group, code, e)
	}
}

// TestHealthReasonCodes: targets that turn from passing to a 500, to hanging
// past the timeout and to a closed port become unhealthy with the AWS reason
// codes; a 302 is a code mismatch, never followed; a target that recovers is
// healthy again after healthy_threshold passes, not at its first.
func TestHealthReasonCodes(t *testing.T) {
	ok := newHCBackend(t, "ok", hcOK)
	code := newHCBackend(t, "code", hcOK)
	hang := newHCBackend(t, "hang", hcOK)
	closed := newHCBackend(t, "closed", hcOK)
	redirect := newHCBackend(t, "redirect", hcRedirect)
	flip := newHCBackend(t, "flip", hc500)
	in := startCaddy(t, hcConfig(`"web": {"health_check": {`+hcFast+`, "path": "/health"}}`, hcRoute("", "web")))
	hcRegister(t, in, "web", ok.port(), code.port(), hang.port(), closed.port(), redirect.port(), flip.port())

	in.waitStates("web", map[string]string{ok.key(): "healthy", code.key(): "healthy", hang.key(): "healthy", closed.key(): "healthy"})
	code.set(hc500)
	hang.set(hcHang)
	closed.set(hcClosed)

	// The flipping target fails its first two checks, then passes.
	waitFor(t, "the 500 target to turn unhealthy", 15*time.Second, func() bool {
		return hcTarget(in, "web", flip.port()).State == "unhealthy"
	})
	if e := hcTarget(in, "web", flip.port()); e.Reason != "Target.ResponseCodeMismatch" || !strings.Contains(e.Description, "[500]") {
		t.Errorf("target answering 500: %+v, want Target.ResponseCodeMismatch with [500]", e)
	}
	if n := flip.checks.Load(); n < 2 {
		t.Errorf("unhealthy after %d failed checks, want unhealthy_threshold 2", n)
	}
	flip.set(hcOK)

	want := map[*hcBackend]struct{ reason, mention string }{
		code:     {"Target.ResponseCodeMismatch", "[500]"},
		hang:     {"Target.Timeout", ""},
		closed:   {"Target.FailedHealthChecks", "connection refused"},
		redirect: {"Target.ResponseCodeMismatch", "[302]"},
	}
	var last map[string]hcEntry
	waitFor(t, "every reason code, and the recovered target healthy", 25*time.Second, func() bool {
		last = map[string]hcEntry{}
		done := true
		for b, w := range want {
			e := hcTarget(in, "web", b.port())
			last[b.name] = e
			if e.State != "unhealthy" || e.Reason != w.reason || !strings.Contains(e.Description, w.mention) {
				done = false
			}
		}
		e := hcTarget(in, "web", flip.port())
		last[flip.name] = e
		if e.State == "healthy" {
			if n := flip.passes.Load(); n < 2 {
				t.Fatalf("the recovered target is healthy after %d passing check(s), want healthy_threshold 2", n)
			}
		} else {
			done = false
			if e.State != "unhealthy" {
				t.Fatalf("the recovering target is %+v, want unhealthy until its second pass", e)
			}
		}
		return done
	})
	if last["hang"].Description == "" {
		t.Errorf("timeout has no description: %+v", last["hang"])
	}
	if n := redirect.followed.Load(); n != 0 {
		t.Errorf("a health check followed the redirect %d times", n)
	}
	if e := hcTarget(in, "web", ok.port()); e.State != "healthy" || e.Reason != "" || e.Description != "" {
		t.Errorf("passing target: %+v", e)
	}

	// Traffic goes to the healthy targets only.
	got := hcSpread(t, in, "/", 20)
	if got["ok"] != 10 || got["flip"] != 10 {
		t.Errorf("spread %v, want 10 each on ok and flip", got)
	}
	for _, b := range []*hcBackend{code, hang, closed, redirect} {
		if n := b.hits.Load(); n != 0 {
			t.Errorf("unhealthy target %s got %d requests", b.name, n)
		}
	}
	if status, gh := hcGetGroupHealth(in, "web"); status != 200 || gh != (hcGroupHealth{Healthy: 2, Unhealthy: 4, Total: 6}) {
		t.Errorf("group health: %d %+v", status, gh)
	}
}

// TestHealthFirstCheckRule: a new target gets traffic right after its first
// passing check, whatever the healthy threshold.
func TestHealthFirstCheckRule(t *testing.T) {
	b := newHCBackend(t, "a", hcOK)
	gate := make(chan struct{})
	b.gate.Store(&gate) // before any check can arrive
	in := startCaddy(t, hcConfig(`"web": {"health_check": {"interval": "5s", "timeout": "2s", "healthy_threshold": 10}}`, hcRoute("", "web")))
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
	in := startCaddy(t, hcConfig(`"web": {"health_check": {"enabled": false, "path": "/health"}}`, hcRoute("", "web")))
	hcRegister(t, in, "web", good.port(), bad.port())
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

// TestHealthFailOpen: with every target unhealthy, traffic reaches them all;
// with only initial targets it is a 503; below unhealthy_state_routing's
// percentage, traffic reaches every checked target.
func TestHealthFailOpen(t *testing.T) {
	d1, d2 := newHCBackend(t, "d1", hc500), newHCBackend(t, "d2", hc500)
	p1, p2, p3 := newHCBackend(t, "p1", hcOK), newHCBackend(t, "p2", hc500), newHCBackend(t, "p3", hc500)
	hc := `"health_check": {` + hcFast + `, "path": "/health"}`
	in := startCaddy(t, hcConfig(
		`"down": {`+hc+`}, "fresh": {`+hc+`},
		 "pct": {`+hc+`, "attributes": {"target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage": "50"}}`,
		hcRoute("/down", "down")+","+hcRoute("/fresh", "fresh")+","+hcRoute("/pct", "pct")))
	hcRegister(t, in, "down", d1.port(), d2.port())
	hcRegister(t, in, "pct", p1.port(), p2.port(), p3.port())

	// A group whose targets have not been checked yet answers 503: it takes
	// two failed checks, five seconds apart, to leave initial.
	hcRegister(t, in, "fresh", freePort(t))
	if code, body := in.get("/fresh"); code != 503 || !strings.Contains(body, "1 initial") {
		t.Errorf("only an initial target: %d %q", code, body)
	}
	// No healthy target: the group is unhealthy (NLB: "healthy as long as
	// it has at least one healthy target"), whatever the thresholds say.
	if code, gh := hcGetGroupHealth(in, "fresh"); code != 503 || gh != (hcGroupHealth{Total: 1, DNSFailover: true}) {
		t.Errorf("group health of fresh: %d %+v", code, gh)
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
	in := startCaddy(t, hcConfig(`"web": {"health_check": {`+hcFast+`}, "attributes": {
		"target_group_health.dns_failover.minimum_healthy_targets.count": "2",
		"target_group_health.unhealthy_state_routing.minimum_healthy_targets.count": "1"}}`, hcRoute("", "web")))
	dead := freePort(t)
	hcRegister(t, in, "web", a.port(), dead)
	in.waitStates("web", map[string]string{a.key(): "healthy"})
	if code, gh := hcGetGroupHealth(in, "web"); code != 503 || !gh.DNSFailover || gh.RoutingFailover || gh.Healthy != 1 || gh.Total != 2 {
		t.Errorf("1 healthy, DNS failover below 2: %d %+v, want 503", code, gh)
	}
	// DNS failover is a signal for DNS; this node still serves.
	if code, body := in.get("/"); code != 200 || body != "a" {
		t.Errorf("during DNS failover: %d %q", code, body)
	}

	hcRegister(t, in, "web", b.port())
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

// TestHealthGRPC: a real gRPC health server as the target of a GRPC group.
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
	in := startCaddy(t, hcConfig(`
		"std": {"protocol_version": "GRPC", "health_check": {`+hcFast+`, "path": "/grpc.health.v1.Health/Check"}},
		"dflt": {"protocol_version": "GRPC", "health_check": {`+hcFast+`}}`, ""))
	var g struct {
		HealthCheck map[string]any `json:"health_check"`
	}
	in.api("GET", "/target-groups/dflt", nil, &g)
	if g.HealthCheck["path"] != "/AWS.ALB/healthcheck" || fmt.Sprint(g.HealthCheck["matcher"]) != "map[grpc_code:12]" {
		t.Errorf("GRPC defaults: %v", g.HealthCheck)
	}
	// The standard health service answers 0 when SERVING: that is its default.
	in.api("GET", "/target-groups/std", nil, &g)
	if fmt.Sprint(g.HealthCheck["matcher"]) != "map[grpc_code:0]" {
		t.Errorf("matcher default with the standard health service: %v", g.HealthCheck["matcher"])
	}
	hcRegister(t, in, "std", port)
	hcRegister(t, in, "dflt", port)
	in.waitStates("std", map[string]string{hcKey(port): "healthy"})
	in.waitStates("dflt", map[string]string{hcKey(port): "healthy"})

	hs.SetServingStatus("", grpc_health_v1.HealthCheckResponse_NOT_SERVING)
	// Two failed checks, five seconds apart.
	waitFor(t, "the NOT_SERVING target to turn unhealthy", 20*time.Second, func() bool {
		return hcTarget(in, "std", port).State == "unhealthy"
	})
	if e := hcTarget(in, "std", port); e.Reason != "Target.FailedHealthChecks" || !strings.Contains(e.Description, "NOT_SERVING") {
		t.Errorf("NOT_SERVING: %+v", e)
	}
	// The default method is unimplemented (code 12, the default matcher):
	// any live gRPC server passes it, whatever its health service says.
	if e := hcTarget(in, "dflt", port); e.State != "healthy" {
		t.Errorf("default gRPC check: %+v", e)
	}
}

// TestHealthCheckPort: checks go to the fixed health_check.port, traffic to
// the target's own port.
func TestHealthCheckPort(t *testing.T) {
	app := newHCBackend(t, "app", hc500) // would fail its checks
	hcsrv := newHCBackend(t, "health", hcOK)
	in := startCaddy(t, hcConfig(fmt.Sprintf(`"web": {"health_check": {%s, "port": %d}}`, hcFast, hcsrv.port()), hcRoute("", "web")))
	hcRegister(t, in, "web", app.port())
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
	in.api("GET", "/target-groups/web", nil, &g)
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

	in := startCaddy(t, hcConfig(`"web": {"protocol": "HTTPS", "health_check": {"protocol": "HTTPS", `+hcFast+`}}`, hcRoute("", "web")))
	hcRegister(t, in, "web", port)
	in.waitStates("web", map[string]string{hcKey(port): "healthy"})
	if tlsChecks.Load() == 0 {
		t.Errorf("no check over TLS")
	}
	if code, body := in.get("/"); code != 200 || body != "tls" {
		t.Errorf("traffic to the HTTPS target: %d %q", code, body)
	}
}
