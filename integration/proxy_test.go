package integration_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// shorthandConfig proxies every request to group "web" through the
// target_group handler.
const shorthandConfig = `{
	"admin": {"listen": "{ADMIN}"},
	"apps": {
		"target_groups": {"groups": {"web": {
			"health_check": {"interval": "5s", "timeout": "2s", "path": "/health"},
			"attributes": {"deregistration_delay.timeout_seconds": "30"}
		}}},
		"http": {"servers": {"s": {
			"listen": ["{HTTP}"],
			"automatic_https": {"disable": true},
			"routes": [{"handle": [{"handler": "target_group", "group": "web"}]}]
		}}}
	}
}`

// dynamicConfig uses the stock reverse_proxy with the upstream source and
// selection policy.
const dynamicConfig = `{
	"admin": {"listen": "{ADMIN}"},
	"apps": {
		"target_groups": {"groups": {"web": {"health_check": {"interval": "5s", "timeout": "2s"}}}},
		"http": {"servers": {"s": {
			"listen": ["{HTTP}"],
			"automatic_https": {"disable": true},
			"routes": [{"handle": [{
				"handler": "reverse_proxy",
				"dynamic_upstreams": {"source": "target_group", "group": "web"},
				"load_balancing": {"selection_policy": {"policy": "target_group", "group": "web"}}
			}]}]
		}}}
	}
}`

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
			if code := in.api("POST", "/target-groups/web/targets", targets(a.port(), b.port(), c.port()), nil); code != 200 {
				t.Fatalf("register: status %d", code)
			}
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
			if code := in.api("POST", "/target-groups/web/targets/deregister", targets(b.port()), nil); code != 200 {
				t.Fatalf("deregister: status %d", code)
			}
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
	in.api("POST", "/target-groups/web/targets", targets(dead), nil)
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
	in.api("POST", "/target-groups/web/targets", targets(a.port(), b.port()), nil)
	want := map[string]string{
		fmt.Sprintf("127.0.0.1:%d", a.port()): "healthy",
		fmt.Sprintf("127.0.0.1:%d", b.port()): "healthy",
	}
	in.waitStates("web", want)

	// Reload the same config through POST /load, as `caddy reload` does.
	if code := in.api("POST", "/load", in.expand(shorthandConfig), nil); code != 200 {
		t.Fatalf("POST /load: status %d", code)
	}
	// Straight after the reload the targets are still healthy: their health
	// was kept, not reset to initial.
	if got := in.states("web"); got[fmt.Sprintf("127.0.0.1:%d", a.port())] != "healthy" || got[fmt.Sprintf("127.0.0.1:%d", b.port())] != "healthy" || len(got) != 2 {
		t.Fatalf("after reload: %v, want %v", got, want)
	}
	if got := spread(t, in, 20, a, b); got["a"] != 10 || got["b"] != 10 {
		t.Fatalf("after reload the spread is %v", got)
	}

	// A reload that changes the group's settings keeps its targets too.
	changed := strings.Replace(shorthandConfig, `"interval": "5s"`, `"interval": "6s"`, 1)
	if code := in.api("POST", "/load", in.expand(changed), nil); code != 200 {
		t.Fatalf("POST /load (changed): status %d", code)
	}
	if got := in.states("web"); len(got) != 2 || got[fmt.Sprintf("127.0.0.1:%d", a.port())] != "healthy" {
		t.Fatalf("after changed reload: %v", got)
	}
	var g struct {
		HealthCheck struct {
			Interval string `json:"interval"`
		} `json:"health_check"`
	}
	in.api("GET", "/target-groups/web", nil, &g)
	if g.HealthCheck.Interval != "6s" {
		t.Fatalf("interval after reload = %q, want 6s", g.HealthCheck.Interval)
	}

	// A config that fails to load changes nothing.
	bad := strings.Replace(shorthandConfig, `"interval": "5s"`, `"interval": "2s"`, 1)
	if err := in.load(bad); err == nil || !strings.Contains(err.Error(), `target group "web"`) || !strings.Contains(err.Error(), "health_check.interval") || !strings.Contains(err.Error(), "5s-300s") {
		t.Fatalf("bad config: error %v, want one naming the group, the field and the range", err)
	}
	if got := in.states("web"); len(got) != 2 {
		t.Fatalf("after a failed load: %v", got)
	}
	in.api("GET", "/target-groups/web", nil, &g)
	if g.HealthCheck.Interval != "6s" {
		t.Fatalf("interval after failed load = %q, want 6s", g.HealthCheck.Interval)
	}
}

func TestUnhealthyTargetGetsNoTraffic(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	b.healthy.Store(false)
	in := startCaddy(t, shorthandConfig)
	in.api("POST", "/target-groups/web/targets", targets(a.port(), b.port()), nil)
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
	in.api("POST", "/target-groups/web/targets", targets(a.port()), nil)
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
