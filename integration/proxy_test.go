package integration_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// shorthand proxies every request to group "web" through the target_group
// handler; the group checks /health every interval (with a 2s timeout) and
// has the deregistration delay given, in seconds.
func shorthand(interval, deregistrationDelay string) string {
	return caddyConfig{
		groups: map[string]any{"web": map[string]any{
			"health_check": map[string]any{"interval": interval, "timeout": "2s", "path": "/health"},
			"attributes":   map[string]any{"deregistration_delay.timeout_seconds": deregistrationDelay},
		}},
		routes: []any{route("", tgHandler("web"))},
	}.json()
}

// shorthandConfig is shorthand with checks every 5s and a 30s delay.
var shorthandConfig = shorthand("5s", "30")

// dynamicConfig uses the stock reverse_proxy with the upstream source and
// selection policy.
var dynamicConfig = caddyConfig{
	groups: map[string]any{"web": `{"health_check": {"interval": "5s", "timeout": "2s"}}`},
	routes: []any{route("", map[string]any{
		"handler":           "reverse_proxy",
		"dynamic_upstreams": map[string]any{"source": "target_group", "group": "web"},
		"load_balancing":    map[string]any{"selection_policy": map[string]any{"policy": "target_group", "group": "web"}},
	})},
}.json()

func spread(t *testing.T, in *instance, n int, bs ...*backend) map[string]int {
	t.Helper()
	for _, b := range bs {
		b.hits.Store(0)
	}
	got := map[string]int{}
	for i := 0; i < n; i++ {
		code, body := in.get("/")
		if code != 200 {
			t.Fatalf("request %d: status %d, body %q", i, code, body)
		}
		got[body]++
	}
	return got
}

func TestRegisterSpreadsRoundRobin(t *testing.T) {
	for name, cfg := range map[string]string{"shorthand": shorthandConfig, "dynamic": dynamicConfig} {
		t.Run(name, func(t *testing.T) {
			a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
			in := startCaddy(t, cfg)
			in.register("web", a.port(), b.port(), c.port())
			in.waitStates("web", map[string]string{
				fmt.Sprintf("127.0.0.1:%d", a.port()): "healthy",
				fmt.Sprintf("127.0.0.1:%d", b.port()): "healthy",
				fmt.Sprintf("127.0.0.1:%d", c.port()): "healthy",
			})
			got := spread(t, in, 300, a, b, c)
			for _, k := range []string{"a", "b", "c"} {
				if got[k] < 95 || got[k] > 105 {
					t.Errorf("target %s got %d of 300 requests, want 100±5 (all: %v)", k, got[k], got)
				}
			}

			// Deregistering takes the target out of new selections at once.
			in.mustAPI("POST", "/target-groups/web/targets/deregister", targets(b.port()), nil)
			if st := in.states("web")[fmt.Sprintf("127.0.0.1:%d", b.port())]; st != "draining" {
				t.Errorf("deregistered target is %q, want draining", st)
			}
			got = spread(t, in, 100, a, b, c)
			if got["b"] != 0 || b.hits.Load() != 0 {
				t.Errorf("deregistered target got %d new requests", got["b"])
			}
			if got["a"]+got["c"] != 100 {
				t.Errorf("remaining targets got %v", got)
			}
		})
	}
}

func TestNoRoutableTargetIs503(t *testing.T) {
	in := startCaddy(t, shorthandConfig)
	start := time.Now()
	code, body := in.get("/")
	if code != 503 || !strings.Contains(body, `target group "web" has no registered target`) {
		t.Fatalf("empty group: status %d body %q, want 503 naming the group", code, body)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("503 took %s", time.Since(start))
	}

	// A target that has not passed a check yet gets no traffic.
	dead := freePort(t)
	in.register("web", dead)
	code, body = in.get("/")
	if code != 503 || !strings.Contains(body, "1 initial") {
		t.Fatalf("only an initial target: status %d body %q", code, body)
	}
}

func TestDynamicEmptyGroupIs503(t *testing.T) {
	in := startCaddy(t, dynamicConfig)
	if code, _ := in.get("/"); code != 503 {
		t.Fatalf("status %d, want 503", code)
	}
}

func TestReloadKeepsRegistrationsAndHealth(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	in := startCaddy(t, shorthandConfig)
	in.register("web", a.port(), b.port())
	want := map[string]string{
		fmt.Sprintf("127.0.0.1:%d", a.port()): "healthy",
		fmt.Sprintf("127.0.0.1:%d", b.port()): "healthy",
	}
	in.waitStates("web", want)

	// Reload the same config through POST /load, as `caddy reload` does.
	in.mustAPI("POST", "/load", in.expand(shorthandConfig), nil)
	// Straight after the reload the targets are still healthy: their health
	// was kept, not reset to initial.
	if got := in.states("web"); got[fmt.Sprintf("127.0.0.1:%d", a.port())] != "healthy" || got[fmt.Sprintf("127.0.0.1:%d", b.port())] != "healthy" || len(got) != 2 {
		t.Fatalf("after reload: %v, want %v", got, want)
	}
	if got := spread(t, in, 20, a, b); got["a"] != 10 || got["b"] != 10 {
		t.Fatalf("after reload the spread is %v", got)
	}

	// A reload that changes the group's settings keeps its targets too.
	changed := shorthand("6s", "30")
	in.mustAPI("POST", "/load", in.expand(changed), nil)
	if got := in.states("web"); len(got) != 2 || got[fmt.Sprintf("127.0.0.1:%d", a.port())] != "healthy" {
		t.Fatalf("after changed reload: %v", got)
	}
	var g struct {
		HealthCheck struct {
			Interval string `json:"interval"`
		} `json:"health_check"`
	}
	in.mustAPI("GET", "/target-groups/web", nil, &g)
	if g.HealthCheck.Interval != "6s" {
		t.Fatalf("interval after reload = %q, want 6s", g.HealthCheck.Interval)
	}

	// A config that fails to load changes nothing.
	bad := shorthand("2s", "30")
	if err := in.load(bad); err == nil || !strings.Contains(err.Error(), `target group "web"`) || !strings.Contains(err.Error(), "health_check.interval") || !strings.Contains(err.Error(), "5s-300s") {
		t.Fatalf("bad config: error %v, want one naming the group, the field and the range", err)
	}
	if got := in.states("web"); len(got) != 2 {
		t.Fatalf("after a failed load: %v", got)
	}
	in.mustAPI("GET", "/target-groups/web", nil, &g)
	if g.HealthCheck.Interval != "6s" {
		t.Fatalf("interval after failed load = %q, want 6s", g.HealthCheck.Interval)
	}
}

func TestUnhealthyTargetGetsNoTraffic(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	b.healthy.Store(false)
	in := startCaddy(t, shorthandConfig)
	in.register("web", a.port(), b.port())
	in.waitStates("web", map[string]string{fmt.Sprintf("127.0.0.1:%d", a.port()): "healthy"})
	waitFor(t, "a check of the failing target", 10*time.Second, func() bool { return b.checks.Load() > 0 })
	got := spread(t, in, 50, a, b)
	if got["b"] != 0 || got["a"] != 50 {
		t.Fatalf("spread %v: the target that never passed a check got traffic", got)
	}
}

func TestInFlightIsCountedExactly(t *testing.T) {
	a := newBackend(t, "a")
	in := startCaddy(t, shorthandConfig)
	in.register("web", a.port())
	key := fmt.Sprintf("127.0.0.1:%d", a.port())
	in.waitStates("web", map[string]string{key: "healthy"})

	const n = 8
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in.get("/?sleep=1500ms")
		}()
	}
	waitFor(t, fmt.Sprintf("%d requests in flight", n), 10*time.Second, func() bool {
		h := in.health("web")
		return len(h.Targets) == 1 && h.Targets[0].InFlight == n
	})
	wg.Wait()
	waitFor(t, "in-flight back to 0", 5*time.Second, func() bool { return in.health("web").Targets[0].InFlight == 0 })
}
