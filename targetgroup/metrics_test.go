package targetgroup

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The collectors follow Prometheus' naming rules, survive a config load (a
// new registry) with their values, and a target's series go once it has
// left its group.
func TestMetrics(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Port: 80, Attributes: map[string]string{AttrDeregistrationDelay: "10"}}, named("metrics-web"))
	defer Use(l.reg)()
	l.register(TargetConfig{ID: "127.0.0.1", Port: 7001})
	l.check(7001, true)
	tg := l.target(7001)
	lease := tg.Acquire()
	lease.End(20*time.Millisecond, 200, false, "")
	tg.Acquire().End(time.Millisecond, 0, true, "refused")

	first := prometheus.NewPedanticRegistry()
	must(t, RegisterMetrics(first))
	must(t, RegisterMetrics(first)) // a second load into one registry
	problems, err := testutil.GatherAndLint(first)
	must(t, err)
	for _, p := range problems {
		if !strings.Contains(p.Text, "counter metrics should have \"_total\" suffix") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
	want := `
# HELP caddy_target_group_requests_total Requests proxied to a target, by the status the target answered (error: none).
# TYPE caddy_target_group_requests_total counter
caddy_target_group_requests_total{code="200",target="127.0.0.1:7001",target_group="metrics-web"} 1
caddy_target_group_requests_total{code="error",target="127.0.0.1:7001",target_group="metrics-web"} 1
# HELP caddy_target_group_health_checks_total Active health checks of a target, by result.
# TYPE caddy_target_group_health_checks_total counter
caddy_target_group_health_checks_total{result="fail",target="127.0.0.1:7001",target_group="metrics-web"} 0
caddy_target_group_health_checks_total{result="pass",target="127.0.0.1:7001",target_group="metrics-web"} 0
# HELP caddy_target_group_targets Targets of a group in each state.
# TYPE caddy_target_group_targets gauge
caddy_target_group_targets{state="draining",target_group="metrics-web"} 0
caddy_target_group_targets{state="healthy",target_group="metrics-web"} 1
caddy_target_group_targets{state="initial",target_group="metrics-web"} 0
caddy_target_group_targets{state="unavailable",target_group="metrics-web"} 0
caddy_target_group_targets{state="unhealthy",target_group="metrics-web"} 0
caddy_target_group_targets{state="unhealthy.draining",target_group="metrics-web"} 0
caddy_target_group_targets{state="unused",target_group="metrics-web"} 0
`
	names := []string{"caddy_target_group_requests_total", "caddy_target_group_health_checks_total", "caddy_target_group_targets"}
	must(t, testutil.GatherAndCompare(first, strings.NewReader(want), names...))

	// The next config load's registry: same values.
	second := prometheus.NewPedanticRegistry()
	must(t, RegisterMetrics(second))
	must(t, testutil.GatherAndCompare(second, strings.NewReader(want), names...))
	if n := testutil.CollectAndCount(responseSeconds, "caddy_target_group_target_response_seconds"); n < 1 {
		t.Fatal("no response time series")
	}

	// Deregistered: its series stay while it drains, and go when it leaves.
	l.deregister(TargetConfig{ID: "127.0.0.1", Port: 7001})
	if n := testutil.CollectAndCount(requestsTotal); n != 2 {
		t.Fatalf("%d request series while draining, want 2", n)
	}
	l.clock.Advance(10 * time.Second)
	for _, c := range []prometheus.Collector{requestsTotal, responseSeconds, healthChecksTotal} {
		if n := testutil.CollectAndCount(c); n != 0 {
			t.Fatalf("%d series left after the target left", n)
		}
	}
}

// The event queue never blocks its producers: past its size events are
// dropped and counted.
func TestEventQueueNeverBlocks(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Port: 80}, named("events-web"))
	before := testutil.ToFloat64(eventsDropped)
	done := make(chan struct{})
	go func() {
		for range eventQueueSize + 10 {
			l.reg.emit(event{name: "target_registered"})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("emit blocked")
	}
	if got := testutil.ToFloat64(eventsDropped) - before; got != 10 {
		t.Fatalf("%v events dropped, want 10", got)
	}
}

// BenchmarkRequestMetrics is what the metrics add to each proxied request:
// the requests counter of the status answered and the response time.
func BenchmarkRequestMetrics(b *testing.B) {
	m := newTargetMetrics("bench-metrics", TargetKey{"10.0.0.1", 80})
	b.ReportAllocs()
	for b.Loop() {
		m.request(200, 3*time.Millisecond)
	}
	b.StopTimer()
	m.forget()
}

// per_target_metrics off removes the per-target series and records none;
// the group series stay.
func TestPerTargetMetricsOff(t *testing.T) {
	defer setPerTargetMetrics(true)
	m := newTargetMetrics("metrics-off", TargetKey{"10.0.0.1", 80})
	m.request(200, time.Millisecond)
	m.checked(true)
	setPerTargetMetrics(false)
	m.request(200, time.Millisecond)
	m.checked(false)
	for _, c := range []prometheus.Collector{requestsTotal, responseSeconds, healthChecksTotal} {
		if n := testutil.CollectAndCount(c); n != 0 {
			t.Fatalf("%d per-target series with per_target_metrics off", n)
		}
	}
	setPerTargetMetrics(true)
	m = newTargetMetrics("metrics-off", TargetKey{"10.0.0.1", 80})
	m.request(200, time.Millisecond)
	if n := testutil.CollectAndCount(requestsTotal); n != 1 {
		t.Fatalf("%d request series once on again", n)
	}
	m.forget()
}
