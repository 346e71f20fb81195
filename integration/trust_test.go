package integration_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Groups the config does not declare get their proxies at Provision: the
// first requests of several routes at once, after a start and after every
// reload, touch no shared state (run with -race; before, this crashed with
// concurrent map writes on the config's context).
func TestFirstRequestsProvisionNothing(t *testing.T) {
	b := newBackend(t, "b")
	const n = 8
	var groups []string
	for i := range n {
		groups = append(groups, fmt.Sprintf("api-%d", i))
	}
	cfg := caddyConfig{groups: map[string]any{}, routes: groupRoutes(groups...)}.json()
	in := startCaddy(t, cfg)
	createOpenGroups(in, b.port(), groups...)
	for round := range 5 {
		if round > 0 {
			if err := in.load(cfg); err != nil {
				t.Fatal(err)
			}
		}
		for i, c := range requestAllAtOnce(in.http, groups) {
			if c != 200 {
				t.Fatalf("round %d, group %s: status %d", round, groups[i], c)
			}
		}
	}
}

// createOpenGroups creates API groups without health checks, each with one
// target on 127.0.0.1:port (routable at once).
func createOpenGroups(in *instance, port int, groups ...string) {
	for _, g := range groups {
		body := fmt.Sprintf(`{"name":%q,"port":%d,"health_check":{"enabled":false},"targets":[{"id":"127.0.0.1"}]}`, g, port)
		in.mustAPI("POST", "/target-groups/", body, nil)
	}
}

// requestAllAtOnce sends one request to /<group> for every group at the
// same moment and returns their statuses (0: no answer).
func requestAllAtOnce(httpAddr string, groups []string) []int {
	var start, wg sync.WaitGroup
	start.Add(1)
	codes := make([]int, len(groups))
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start.Wait()
			if r, err := http.Get(fmt.Sprintf("http://%s/%s", httpAddr, g)); err == nil {
				codes[i] = r.StatusCode
				r.Body.Close()
			}
		}()
	}
	start.Done()
	wg.Wait()
	return codes
}

// No routable target is a Caddy error with status 503: handle_errors
// renders it with the reason, and without it the body is empty (the reason
// goes to the log only).
func TestNoRoutableTargetIsACaddyError(t *testing.T) {
	in := newInstance(t)
	in.plainErrors = true
	plain := caddyConfig{groups: map[string]any{}, routes: groupRoutes("web")}.json()
	if err := in.load(plain); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	if code, body := in.get("/web"); code != 503 || body != "" {
		t.Fatalf("no handle_errors: %d %q, want an empty 503", code, body)
	}
	in.plainErrors = false
	if err := in.load(plain); err != nil {
		t.Fatal(err)
	}
	if code, body := in.get("/web"); code != 503 || !strings.Contains(body, `target group "web" does not exist`) {
		t.Fatalf("with handle_errors: %d %q, want 503 with the reason", code, body)
	}
}

// webGroup is a config group "web" checked every 5s.
var webGroup = map[string]any{"web": `{"health_check":{"interval":"5s","timeout":"2s"}}`}

// A reload re-checks what the API registered: narrowing allowed_cidrs makes
// a registered target unused at once, with no traffic, and widening it
// again brings it back through initial.
func TestReloadRevalidatesRegisteredTargets(t *testing.T) {
	a := newBackend(t, "a")
	wide := caddyConfig{groups: webGroup, routes: groupRoutes("web")}
	narrow := wide
	narrow.app = map[string]any{"allowed_cidrs": []string{"10.0.0.0/8"}}
	in := startCaddy(t, wide.json())
	in.register("web", a.port())
	key := fmt.Sprintf("127.0.0.1:%d", a.port())
	in.waitStates("web", map[string]string{key: "healthy"})
	if err := in.load(narrow.json()); err != nil {
		t.Fatal(err)
	}
	// In force as soon as the load returns: no waiting.
	e := in.health("web").Targets[0]
	if e.TargetHealth.State != "unused" || e.TargetHealth.Reason != "Target.InvalidState" || !strings.Contains(e.TargetHealth.Description, "allowed CIDR") {
		t.Fatalf("after narrowing: %+v, want unused / Target.InvalidState saying why", e.TargetHealth)
	}
	a.hits.Store(0)
	if code, _ := in.get("/web"); code != 503 || a.hits.Load() != 0 {
		t.Fatalf("after narrowing: status %d, %d hits, want 503 and none", code, a.hits.Load())
	}
	if err := in.load(wide.json()); err != nil {
		t.Fatal(err)
	}
	if s := in.states("web")[key]; s != "initial" {
		t.Fatalf("after widening: %s, want initial", s)
	}
	in.waitStates("web", map[string]string{key: "healthy"})
	if code, body := in.get("/web"); code != 200 || body != "a" {
		t.Fatalf("back in: %d %q", code, body)
	}
}

// Host-name targets carry traffic to what they resolve to.
func TestInstanceTargetsCarryTraffic(t *testing.T) {
	a := newBackend(t, "a")
	in := startCaddy(t, caddyConfig{
		groups: map[string]any{"inst": `{"type":"instance","health_check":{"interval":"5s","timeout":"2s"}}`},
		routes: groupRoutes("inst"),
	}.json())
	in.mustAPI("POST", "/target-groups/inst/targets", map[string]any{"targets": []any{map[string]any{"id": "localhost", "port": a.port()}}}, nil)
	key := fmt.Sprintf("localhost:%d", a.port())
	in.waitStates("inst", map[string]string{key: "healthy"})
	if code, body := in.get("/inst"); code != 200 || body != "a" {
		t.Fatalf("instance target: %d %q", code, body)
	}
}

func TestInstanceTargetOutsideAllowedCIDRs(t *testing.T) {
	a := newBackend(t, "a")
	in2 := startCaddy(t, caddyConfig{
		groups: map[string]any{"meta": `{"type":"instance","health_check":{"interval":"5s","timeout":"2s"}}`},
		app:    map[string]any{"allowed_cidrs": []string{"10.0.0.0/8"}},
		routes: groupRoutes("meta"),
	}.json())
	in2.mustAPI("POST", "/target-groups/meta/targets", map[string]any{"targets": []any{map[string]any{"id": "localhost", "port": a.port()}}}, nil)
	// A name resolving outside allowed_cidrs is unused and never connected to.
	var e struct {
		State, Reason, Description string
	}
	waitFor(t, "the name to be resolved", 15*time.Second, func() bool {
		h := in2.health("meta").Targets[0].TargetHealth
		e.State, e.Reason, e.Description = h.State, h.Reason, h.Description
		return e.State == "unused"
	})
	if e.Reason != "Target.InvalidState" || !strings.Contains(e.Description, "127.0.0.1") {
		t.Fatalf("name resolving outside allowed_cidrs: %+v", e)
	}
	if code, _ := in2.get("/meta"); code != 503 {
		t.Fatalf("status %d, want 503", code)
	}
	if n := a.checks.Load() + a.hits.Load(); n != 0 {
		t.Fatalf("the target was connected to %d times", n)
	}
}

// This Caddy's own admin listener can't be registered.
func TestAdminListenerRefused(t *testing.T) {
	in := startCaddy(t, caddyConfig{groups: map[string]any{"web": `{}`}, routes: groupRoutes("web")}.json())
	_, port, _ := net.SplitHostPort(in.admin)
	var e apiError
	code := in.api("POST", "/target-groups/web/targets", `{"targets":[{"id":"127.0.0.1","port":`+port+`}]}`, &e)
	if code != 400 || e.Error.Code != "ValidationException" || !strings.Contains(e.Error.Message, "admin") {
		t.Fatalf("registering the admin listener: %d %+v, want 400 ValidationException saying why", code, e)
	}
	if got := in.health("web").Targets; len(got) != 0 {
		t.Fatalf("the refused call registered %d targets", len(got))
	}
}

// IPv6 end to end: a group of ip_address_type ipv6 checks and proxies to
// [::1].
func TestIPv6EndToEnd(t *testing.T) {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "v6") }))
	srv.Listener = l
	srv.Start()
	defer srv.Close()
	port := l.Addr().(*net.TCPAddr).Port
	in := startCaddy(t, caddyConfig{
		groups: map[string]any{"six": `{"ip_address_type":"ipv6","health_check":{"interval":"5s","timeout":"2s"}}`},
		routes: groupRoutes("six"),
	}.json())
	in.mustAPI("POST", "/target-groups/six/targets", map[string]any{"targets": []any{map[string]any{"id": "::1", "port": port}}}, nil)
	in.waitStates("six", map[string]string{fmt.Sprintf("::1:%d", port): "healthy"})
	if code, body := in.get("/six"); code != 200 || body != "v6" {
		t.Fatalf("through the ipv6 group: %d %q", code, body)
	}
	var e apiError
	if code := in.api("POST", "/target-groups/six/targets", targets(port), &e); code != 400 || !strings.Contains(e.Error.Message, "ipv6") {
		t.Fatalf("an IPv4 target in an ipv6 group: %d %+v", code, e)
	}
}
