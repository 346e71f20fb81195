package targetgroup

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
)

// Snapshot is what the request path reads: the group's spec and the targets
// that may receive new requests right now. It is never modified once
// published; what picking needs of it is unexported, so that only Pick
// reads it.
type Snapshot struct {
	Spec *Spec
	// Routable are the targets new requests may go to, in a stable order.
	Routable []*Target
	// dials are their addresses ("ip:port", checked against allowed_cidrs
	// when published).
	dials []string
	// FailOpen is true when too few targets are healthy and Routable holds
	// unhealthy targets too (unhealthy_state_routing).
	FailOpen bool
	byDial   map[string]*Target
	byKey    map[TargetKey]int // index in Routable
	healthyN int               // Routable[:healthyN] are healthy

	// cursor is the group's round-robin cursor: it outlives snapshots and is
	// shared by every route that uses the group, so that the spread is even
	// across them.
	cursor *atomic.Uint64
	// stick is the group's stickiness, derived once per spec.
	stick Stickiness
	// weights of the routable targets, for weighted_random.
	weights *selection.Weights
	// slowStart is the group's slow start duration; slowSince holds, for
	// each routable target, when it entered slow start (UnixNano, 0: not in
	// it).
	slowStart    time.Duration
	anySlowStart bool
	slowSince    []int64

	Healthy, Unhealthy, Initial, Draining, Unavailable, Total int

	// Zone is this node's zone (the app's `zone`); with CrossZone off, only
	// targets of that zone (or of no zone, or "all") are considered, and
	// OtherZones counts the others.
	Zone       string
	CrossZone  bool
	OtherZones int
}

func (s *Snapshot) inZone(az string) bool {
	return s.Zone == "" || az == "" || az == "all" || az == s.Zone
}

// IsHealthy reports whether routable target i is healthy (or unchecked with
// health checks off) rather than routed to by fail-open.
func (s *Snapshot) IsHealthy(i int) bool { return i >= 0 && i < s.healthyN }

// Index finds a routable target by its (id, port); -1 when not routable.
func (s *Snapshot) Index(k TargetKey) int {
	if i, ok := s.byKey[k]; ok {
		return i
	}
	return -1
}

// SlowStartSince reports when routable target i entered slow start, and
// whether it is in slow start at now.
func (s *Snapshot) SlowStartSince(i int, now time.Time) (time.Time, bool) {
	if !s.anySlowStart || s.slowSince[i] == 0 {
		return time.Time{}, false
	}
	since := time.Unix(0, s.slowSince[i])
	return since, now.Sub(since) < s.slowStart
}

// Stickiness is the group's stickiness, as its spec says.
func (s *Snapshot) Stickiness() Stickiness { return s.stick }

// Dial is the address routable target i is connected to, "ip:port": a host
// name's resolved address, never the name, so that whatever dials it (a
// reverse_proxy transport of the user's) connects only where the health
// check did, inside allowed_cidrs. A function (lambda) has none: "".
func (s *Snapshot) Dial(i int) string { return s.dials[i] }

// ByDial finds a routable target by the address Dial gives for it.
func (s *Snapshot) ByDial(dial string) *Target { return s.byDial[dial] }

// NoTargetReason explains an empty Routable list to a client or a log.
func (s *Snapshot) NoTargetReason(group string) string {
	switch {
	case s.Total == 0 && s.Draining == 0:
		return fmt.Sprintf("target group %q has no registered target", group)
	default:
		return fmt.Sprintf("target group %q has no routable target (%d initial, %d unhealthy, %d draining)", group, s.Initial, s.Unhealthy, s.Draining)
	}
}

// publish rebuilds the snapshot. Called with mu held (or before the group is shared).
func (g *Group) publish() {
	s := &Snapshot{Spec: g.spec, byDial: make(map[string]*Target), byKey: make(map[TargetKey]int), Zone: g.reg.Zone(), CrossZone: g.spec.CrossZone(), cursor: &g.rr, stick: g.stick}
	var healthy, unhealthy []*Target
	for _, t := range g.sortedTargets() {
		if !s.CrossZone && !s.inZone(t.cfg.AvailabilityZone) {
			// Without cross-zone load balancing this node routes only to its
			// own zone's targets, and the thresholds apply to those alone.
			s.OtherZones++
			continue
		}
		switch t.state {
		case StateUnused:
			// Not registered, not resolvable or no longer fitting the
			// config: no part of the group's health.
			continue
		case StateHealthy:
			healthy = append(healthy, t)
			s.Healthy++
		case StateUnavailable:
			healthy = append(healthy, t)
			s.Unavailable++
		case StateUnhealthy, StateUnhealthyDraining:
			unhealthy = append(unhealthy, t)
			s.Unhealthy++
		case StateInitial:
			s.Initial++
		case StateDraining:
			s.Draining++
			continue
		}
		s.Total++
	}
	// A host name is routable only once it resolved inside allowed_cidrs;
	// a function has no address.
	lambda := g.spec.Config.Type == TypeLambda
	unresolved := func(t *Target) bool { return !lambda && t.addr.Load() == nil }
	healthy = slices.DeleteFunc(healthy, unresolved)
	unhealthy = slices.DeleteFunc(unhealthy, unresolved)
	s.Routable = healthy
	s.healthyN = len(healthy)
	a := g.spec.Attributes
	if s.Unavailable == 0 && len(unhealthy) > 0 {
		// AWS: below either threshold, route to every checked target, the
		// unhealthy ones included, rather than overload the few healthy ones.
		below := s.Healthy < a.RoutingFailoverCount
		if p := a.RoutingFailoverPercentage; p > 0 && s.Healthy*100 < p*s.Total {
			below = true
		}
		if below {
			s.FailOpen = true
			s.Routable = append(append([]*Target(nil), healthy...), unhealthy...)
		}
	}
	s.slowStart = a.SlowStart
	s.slowSince = make([]int64, len(s.Routable))
	s.dials = make([]string, len(s.Routable))
	var weights []float64
	if a.Algorithm == AlgorithmWeightedRandom {
		weights = make([]float64, len(s.Routable))
	}
	for i, t := range s.Routable {
		if a := t.addr.Load(); a != nil {
			s.dials[i] = a.s
			s.byDial[s.dials[i]] = t
		}
		s.byKey[t.Key()] = i
		if !t.slowStartSince.IsZero() {
			s.slowSince[i] = t.slowStartSince.UnixNano()
			s.anySlowStart = true
		}
		if weights != nil {
			weights[i] = float64(max(t.cfg.Weight, 1)) * t.multiplier()
		}
	}
	if a.Algorithm == AlgorithmWeightedRandom {
		s.weights = selection.NewWeights(weights)
	}
	if old := g.snap.Load(); old != nil {
		if was, is := old.health(), s.health(); was.RoutingFailover != is.RoutingFailover || was.DNSFailover != is.DNSFailover {
			g.pending = append(g.pending, event{name: "target_group_health_changed", data: map[string]any{
				"group": g.name, "routing_failover": is.RoutingFailover, "dns_failover": is.DNSFailover, "healthy": is.Healthy, "total": is.Total,
			}})
		}
	}
	g.snap.Store(s)
}

// sortedTargets returns the group's targets by (id, port). Called with mu
// held; the slice is shared until the next change: read it, don't modify it.
func (g *Group) sortedTargets() []*Target {
	switch {
	case len(g.order)+len(g.added) != len(g.targets):
		order := make([]*Target, 0, len(g.targets))
		for _, t := range g.targets {
			order = append(order, t)
		}
		slices.SortFunc(order, compareTargets)
		g.order, g.added = order, nil
	case len(g.added) > 0:
		slices.SortFunc(g.added, compareTargets)
		order := make([]*Target, 0, len(g.order)+len(g.added))
		i, j := 0, 0
		for i < len(g.order) && j < len(g.added) {
			if compareTargets(g.order[i], g.added[j]) <= 0 {
				order = append(order, g.order[i])
				i++
			} else {
				order = append(order, g.added[j])
				j++
			}
		}
		order = append(append(order, g.order[i:]...), g.added[j:]...)
		g.order, g.added = order, nil
	}
	return g.order
}

func compareTargets(a, b *Target) int {
	if c := strings.Compare(a.key.ID, b.key.ID); c != 0 {
		return c
	}
	return cmp.Compare(a.key.Port, b.key.Port)
}
