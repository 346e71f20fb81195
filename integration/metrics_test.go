package integration_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	// The admin endpoint's /metrics, as in a standard Caddy build.
	_ "github.com/caddyserver/caddy/v2/modules/metrics"
)

// scrape reads the admin endpoint's /metrics and returns the plugin's
// samples, name{labels} → value, histogram buckets left out.
func (in *instance) scrape() map[string]string {
	in.t.Helper()
	resp, err := http.Get("http://" + in.admin + "/metrics")
	if err != nil {
		in.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		in.t.Fatalf("GET /metrics: %s", resp.Status)
	}
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "caddy_target_group_") || strings.Contains(line, "_bucket{") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if _, dup := out[line[:i]]; dup {
				in.t.Fatalf("duplicate series %s", line[:i])
			}
			out[line[:i]] = line[i+1:]
		}
	}
	return out
}

// The plugin's metrics on the admin endpoint's /metrics: requests per
// target and status, states, in flight, failover; the same values after a
// config reload, and a deregistered target's series gone once it has left.
func TestMetricsOnTheAdminEndpoint(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	cfg := caddyConfig{
		groups: map[string]any{"metered": `{"health_check": {"path": "/health", "interval": "5s", "timeout": "2s", "healthy_threshold": 2}, "attributes": {"deregistration_delay.timeout_seconds": "0"}}`},
		routes: groupRoutes("metered"),
	}.json()
	in := startCaddy(t, cfg)
	in.register("metered", a.port(), b.port())
	ta, tb := fmt.Sprintf("127.0.0.1:%d", a.port()), fmt.Sprintf("127.0.0.1:%d", b.port())
	in.waitStates("metered", map[string]string{ta: "healthy", tb: "healthy"})
	for range 10 {
		if code, _ := in.get("/metered"); code != 200 {
			t.Fatalf("request answered %d", code)
		}
	}
	series := func(name, labels string) string { return name + "{" + labels + "}" }
	want := map[string]string{
		series("caddy_target_group_requests_total", `code="200",target="`+ta+`",target_group="metered"`):     "5",
		series("caddy_target_group_requests_total", `code="200",target="`+tb+`",target_group="metered"`):     "5",
		series("caddy_target_group_targets", `state="healthy",target_group="metered"`):                       "2",
		series("caddy_target_group_targets", `state="unhealthy",target_group="metered"`):                     "0",
		series("caddy_target_group_in_flight", `target="`+ta+`",target_group="metered"`):                     "0",
		series("caddy_target_group_failover", `kind="routing",target_group="metered"`):                       "0",
		series("caddy_target_group_target_response_seconds_count", `target="`+ta+`",target_group="metered"`): "5",
	}
	check := func(when string, got map[string]string) {
		t.Helper()
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %s", when, k, got[k], v)
			}
		}
	}
	check("after 10 requests", in.scrape())

	if err := in.load(cfg); err != nil {
		t.Fatal(err)
	}
	check("after a reload", in.scrape())

	in.mustAPI("POST", "/target-groups/metered/targets/deregister", targets(b.port()), nil)
	waitFor(t, "the deregistered target's series to go", 10*time.Second, func() bool {
		got := in.scrape()
		for k := range got {
			if strings.Contains(k, `target="`+tb+`"`) {
				return false
			}
		}
		return got[series("caddy_target_group_requests_total", `code="200",target="`+ta+`",target_group="metered"`)] == "5"
	})
}

// Layer 4: connections per target and bytes each way, per group.
func TestLayer4Metrics(t *testing.T) {
	a := newL4Backend(t, "a", "127.0.0.1", l4TCP)
	listen := l4Listen(t)
	in := startCaddy(t, l4Config(l4Group("TCP", nil), map[string]any{"listen": []string{listen}}))
	l4Register(t, in, a)
	for i := range 3 {
		conn := l4Dial(t, listen, "")
		conn.echo(t, fmt.Sprintf("hello %d", i))
		conn.Close()
	}
	waitFor(t, "the connections' metrics", 5*time.Second, func() bool {
		got := in.scrape()
		in4, out4 := got[`caddy_target_group_bytes_total{direction="in",target_group="pool"}`], got[`caddy_target_group_bytes_total{direction="out",target_group="pool"}`]
		return got[`caddy_target_group_connections_total{target="`+a.key()+`",target_group="pool"}`] == "3" && in4 != "" && in4 != "0" && out4 != "" && out4 != "0"
	})
}
