package integration_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestALBTargetThroughLayer4: an `alb` group of the layer4 app, as a
// Network Load Balancer with an Application Load Balancer as its target.
// The target is a second Caddy (with a target group and a backend of its
// own), named by host name, health-checked over HTTP through that Caddy,
// and it carries the TCP traffic.
func TestALBTargetThroughLayer4(t *testing.T) {
	t.Parallel()
	backend := newBackend(t, "inner")

	inner := newCaddyProc(t)
	inner.start(inner.expand(caddyConfig{
		groups: map[string]any{"web": map[string]any{
			"targets":      []any{map[string]any{"id": "127.0.0.1", "port": backend.port()}},
			"health_check": map[string]any{"interval": "5s", "timeout": "2s"},
		}},
		routes: []any{route("", tgHandler("web"))},
	}.json()))
	inner.waitHealthy("web", backend.port())
	_, portText, _ := strings.Cut(inner.http, ":")
	innerPort := mustAtoi(t, portText)

	listen := l4Listen(t)
	outer := newCaddyProc(t)
	outer.start(outer.expand(caddyConfig{
		groups: map[string]any{"pool": map[string]any{
			"type":     "alb",
			"protocol": "TCP",
			"port":     innerPort,
			"targets":  []any{map[string]any{"id": "localhost"}},
			"health_check": map[string]any{
				"protocol": "HTTP", "path": "/", "interval": "5s", "timeout": "2s", "healthy_threshold": 2,
			},
		}},
		layer4: map[string]any{"s": l4Server(map[string]any{"listen": []string{listen}})},
	}.json()))

	var g struct {
		Type        string         `json:"type"`
		HealthCheck map[string]any `json:"health_check"`
		Attributes  map[string]any `json:"attributes"`
	}
	outer.mustAPI("GET", "/target-groups/pool", nil, &g)
	if g.Type != "alb" || g.HealthCheck["protocol"] != "HTTP" || g.HealthCheck["matcher"] == nil {
		t.Errorf("alb group as answered: %+v", g)
	}
	checksBefore := backend.checks.Load()
	waitFor(t, "the alb target healthy", 20*time.Second, func() bool {
		st, ok := outer.describe("pool")[innerPort]
		return ok && st.state == "healthy"
	})
	// The outer Caddy's checks went through the inner one to its backend
	// (which counts every health checker's request as a check).
	if backend.checks.Load() <= checksBefore {
		t.Errorf("no health check reached the backend through the inner Caddy")
	}

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 5 {
		resp, err := client.Get(fmt.Sprintf("http://%s/?i=%d", listen, i))
		if err != nil {
			t.Fatalf("request %d through the layer4 listener: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "inner" {
			t.Fatalf("request %d: %d %q, want the inner backend's answer", i, resp.StatusCode, b)
		}
	}
	if hits := backend.hits.Load(); hits < 5 {
		t.Errorf("the backend served %d requests, want 5", hits)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return n
}
