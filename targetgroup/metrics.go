package targetgroup

import (
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Prometheus metrics, in Caddy's metrics registry (admin /metrics, and the
// metrics handler). Caddy makes a new registry at every config load; the
// collectors here are the process's, registered into each new one, so that
// counters survive reloads without a reset or a duplicate series. Counters
// are updated where things happen (the request path costs a few atomic
// adds: each target keeps its series); gauges are read at scrape time from
// the live groups, so a target that has left simply is not there.

const (
	metricsNamespace = "caddy"
	metricsSubsystem = "target_group"
)

var (
	groupTargetLabels = []string{"target_group", "target"}

	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "requests_total",
		Help: "Requests proxied to a target, by the status the target answered (error: none).",
	}, []string{"target_group", "target", "code"})
	responseSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "target_response_seconds",
		Help:    "Time from sending a request to a target until its response is done.",
		Buckets: prometheus.DefBuckets,
	}, groupTargetLabels)
	healthChecksTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "health_checks_total",
		Help: "Active health checks of a target, by result.",
	}, []string{"target_group", "target", "result"})
	connectionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "connections_total",
		Help: "Layer 4 connections (UDP: flows) relayed to a target.",
	}, groupTargetLabels)
	bytesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "bytes_total",
		Help: "Layer 4 bytes relayed: in from clients to targets, out from targets to clients.",
	}, []string{"target_group", "direction"})
	eventsDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "events_dropped_total",
		Help: "Events not emitted because the event queue was full (a slow subscriber).",
	})
	scraped = &stateCollector{}
)

// RegisterMetrics registers the plugin's collectors into reg, the metrics
// registry of the config being loaded. A collector registered already (an
// earlier load into the same registry) is fine.
func RegisterMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{requestsTotal, responseSeconds, healthChecksTotal, connectionsTotal, bytesTotal, eventsDropped, scraped} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// perTargetOff is the per_target_metrics app field, inverted.
var perTargetOff atomic.Bool

// setPerTargetMetrics switches the per-target series on or off; off
// removes those there are.
func setPerTargetMetrics(on bool) {
	if wasOff := perTargetOff.Swap(!on); on || wasOff {
		return // only switching off has series to remove
	}
	requestsTotal.Reset()
	responseSeconds.Reset()
	healthChecksTotal.Reset()
	connectionsTotal.Reset()
}

// targetMetrics are a target's series, each looked up once: the health
// check counters at once, the others (HTTP or layer 4) at first use.
type targetMetrics struct {
	group, target string
	pass, fail    prometheus.Counter
	response      atomic.Pointer[prometheus.Observer]
	conns         atomic.Pointer[prometheus.Counter]
	// last is the requests counter of the status last answered: nearly
	// every response of a target has the status of the one before.
	last atomic.Pointer[codeCounter]
}

type codeCounter struct {
	code int
	c    prometheus.Counter
}

func newTargetMetrics(group string, key TargetKey) *targetMetrics {
	target := key.String()
	return &targetMetrics{
		group: group, target: target,
		pass: healthChecksTotal.WithLabelValues(group, target, "pass"),
		fail: healthChecksTotal.WithLabelValues(group, target, "fail"),
	}
}

// request counts one request that the target answered with code (0: it
// did not answer), which took latency.
func (m *targetMetrics) request(code int, latency time.Duration) {
	if perTargetOff.Load() {
		return
	}
	cc := m.last.Load()
	if cc == nil || cc.code != code {
		label := "error"
		if code > 0 {
			label = strconv.Itoa(code)
		}
		cc = &codeCounter{code, requestsTotal.WithLabelValues(m.group, m.target, label)}
		m.last.Store(cc)
	}
	cc.c.Inc()
	o := m.response.Load()
	if o == nil {
		obs := responseSeconds.WithLabelValues(m.group, m.target)
		o = &obs
		m.response.Store(o)
	}
	(*o).Observe(latency.Seconds())
}

// checked counts one active health check.
func (m *targetMetrics) checked(pass bool) {
	switch {
	case perTargetOff.Load():
	case pass:
		m.pass.Inc()
	default:
		m.fail.Inc()
	}
}

// forget removes the target's series, once it has left its group.
func (m *targetMetrics) forget() {
	labels := prometheus.Labels{"target_group": m.group, "target": m.target}
	requestsTotal.DeletePartialMatch(labels)
	responseSeconds.DeletePartialMatch(labels)
	healthChecksTotal.DeletePartialMatch(labels)
	connectionsTotal.DeletePartialMatch(labels)
}

// forgetGroupSeries removes the series of a deleted group that are the
// group's own; its targets' go as each of them leaves.
func forgetGroupSeries(group string) {
	bytesTotal.DeletePartialMatch(prometheus.Labels{"target_group": group})
}

// forgetGroupMetrics removes a group's series, once it has left the
// registry.
func forgetGroupMetrics(group string) {
	labels := prometheus.Labels{"target_group": group}
	requestsTotal.DeletePartialMatch(labels)
	responseSeconds.DeletePartialMatch(labels)
	healthChecksTotal.DeletePartialMatch(labels)
	connectionsTotal.DeletePartialMatch(labels)
	bytesTotal.DeletePartialMatch(labels)
}

// Relayed counts a layer 4 connection's bytes to and from a target of g.
func (g *Group) Relayed(in, out int64) {
	if in > 0 {
		bytesTotal.WithLabelValues(g.name, "in").Add(float64(in))
	}
	if out > 0 {
		bytesTotal.WithLabelValues(g.name, "out").Add(float64(out))
	}
}

// Connected counts a layer 4 connection (a UDP flow) to t.
func (t *Target) Connected() {
	if perTargetOff.Load() {
		return
	}
	m := t.metrics
	c := m.conns.Load()
	if c == nil {
		cnt := connectionsTotal.WithLabelValues(m.group, m.target)
		c = &cnt
		m.conns.Store(c)
	}
	(*c).Inc()
}

var (
	targetsDesc = prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "targets"),
		"Targets of a group in each state.", []string{"target_group", "state"}, nil)
	inFlightDesc = prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "in_flight"),
		"Requests (layer 4: connections) in flight to a target through this Caddy.", groupTargetLabels, nil)
	failoverDesc = prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "failover"),
		"1 while the group is in failover: routing (traffic goes to unhealthy targets too) or dns (a DNS health check should steer clients away).",
		[]string{"target_group", "kind"}, nil)
)

// metricStates are the states reported, each with a series (0 included).
var metricStates = []State{StateInitial, StateHealthy, StateUnhealthy, StateUnhealthyDraining, StateDraining, StateUnused, StateUnavailable}

// stateCollector reads the gauges off the live groups at scrape time.
type stateCollector struct{}

func (*stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- targetsDesc
	ch <- inFlightDesc
	ch <- failoverDesc
}

func (*stateCollector) Collect(ch chan<- prometheus.Metric) {
	r := Current()
	if r == nil {
		return
	}
	for _, g := range r.Groups() {
		counts := make(map[State]int, len(metricStates))
		g.lock()
		type inflight struct {
			target string
			n      int64
		}
		flights := make([]inflight, 0, len(g.targets))
		for _, t := range g.sortedTargets() {
			counts[t.state]++
			flights = append(flights, inflight{t.metrics.target, t.inflight.Load()})
		}
		g.unlock()
		for _, s := range metricStates {
			ch <- prometheus.MustNewConstMetric(targetsDesc, prometheus.GaugeValue, float64(counts[s]), g.name, string(s))
		}
		if !perTargetOff.Load() {
			for _, f := range flights {
				ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(f.n), g.name, f.target)
			}
		}
		h := g.Health()
		ch <- prometheus.MustNewConstMetric(failoverDesc, prometheus.GaugeValue, b2f(h.RoutingFailover), g.name, "routing")
		ch <- prometheus.MustNewConstMetric(failoverDesc, prometheus.GaugeValue, b2f(h.DNSFailover), g.name, "dns")
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
