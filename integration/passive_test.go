package integration_test

import (
	"fmt"
	"strings"
	"testing"
)

// passiveConfig checks rarely (the first check still runs at once) and
// turns a target unhealthy after two failed proxied requests.
var passiveConfig = caddyConfig{
	groups: map[string]any{"web": `{"health_check": {"interval": "300s", "timeout": "2s", "passive_unhealthy_threshold": 2}}`},
	routes: []any{route("", tgHandler("web"))},
}.json()

func TestPassiveHealthMarksFailingTargetUnhealthy(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	in := startCaddy(t, passiveConfig)
	in.register("web", a.port(), b.port())
	keyA, keyB := fmt.Sprintf("127.0.0.1:%d", a.port()), fmt.Sprintf("127.0.0.1:%d", b.port())
	in.waitStates("web", map[string]string{keyA: "healthy", keyB: "healthy"})

	b.failing.Store(true)
	// Round robin sends every other request to b: after two of its 503s it
	// is unhealthy, long before the next active check (300s away).
	for i := 0; i < 4; i++ {
		in.get("/")
	}
	var desc string
	for _, e := range in.health("web").Targets {
		if e.Target.Port == b.port() {
			desc = e.TargetHealth.Description
			if e.TargetHealth.State != "unhealthy" || e.TargetHealth.Reason != "Target.FailedHealthChecks" {
				t.Fatalf("b is %+v, want unhealthy by passive health", e.TargetHealth)
			}
		}
	}
	if !strings.Contains(desc, "passive") || !strings.Contains(desc, "503") {
		t.Fatalf("description %q does not explain the passive check", desc)
	}
	got := spread(t, in, 10, a, b)
	if got["a"] != 10 {
		t.Fatalf("after passive failure the spread is %v", got)
	}
	if st := in.states("web")[keyA]; st != "healthy" {
		t.Fatalf("a is %s", st)
	}
}

func TestPassiveHealthCountsConnectionErrors(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	in := startCaddy(t, passiveConfig)
	in.register("web", a.port(), b.port())
	keyB := fmt.Sprintf("127.0.0.1:%d", b.port())
	in.waitStates("web", map[string]string{keyB: "healthy", fmt.Sprintf("127.0.0.1:%d", a.port()): "healthy"})
	b.srv.Close() // b goes away between two active checks
	for i := 0; i < 4; i++ {
		in.get("/")
	}
	if st := in.states("web")[keyB]; st != "unhealthy" {
		t.Fatalf("b is %s after refusing connections, want unhealthy", st)
	}
}
