package targetgroup

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-targetgroup/caddy-targetgroup/healthcheck"
	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
)

// Sources of a group: declared in the config, or created through the API.
const (
	SourceConfig = "config"
	SourceAPI    = "api"
)

// Group is the live state of one target group. Writers (config loads, the
// admin API, health checks, drain timers) serialise on mu; the request path
// only loads the current Snapshot, which is immutable and swapped atomically.
type Group struct {
	reg  *Registry
	name string
	id   string

	// version is that of the group's stored record.
	version atomic.Int64

	mu          sync.Mutex
	spec        *Spec
	source      string
	created     *GroupConfig // creation parameters, for idempotent CreateTargetGroup
	clientToken string
	targets     map[TargetKey]*Target
	// order is targets sorted by (id, port), kept up to date by merging
	// the targets added since (added) instead of sorting the whole group
	// on every registration. Both only grow between rebuilds, so after a
	// removal they hold more targets than the map: that is what makes
	// sortedTargets rebuild.
	order      []*Target
	added      []*Target
	tombstones map[TargetKey]time.Time // API deregistrations restored from storage
	closed     bool
	pending    []event // emitted once mu is released

	// flows are the live UDP flows, bounded by max_udp_flows_per_group.
	flows flowTable

	snap atomic.Pointer[Snapshot]
	// RR is the group's round-robin cursor, shared by every route that uses
	// the group so that the spread is even across them.
	RR atomic.Uint64
}

// Snapshot is what the request path reads: the group's spec and the targets
// that may receive new requests right now. It is never modified once
// published.
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

	// Weights of the routable targets for weighted_random.
	Weights *selection.Weights
	// SlowStart is the group's slow start duration; slowSince holds, for each
	// routable target, when it entered slow start (UnixNano, 0: not in it).
	SlowStart    time.Duration
	AnySlowStart bool
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
	if !s.AnySlowStart || s.slowSince[i] == 0 {
		return time.Time{}, false
	}
	since := time.Unix(0, s.slowSince[i])
	return since, now.Sub(since) < s.SlowStart
}

// Dial is the address routable target i is connected to, "ip:port": a host
// name's resolved address, never the name, so that whatever dials it (a
// reverse_proxy transport of the user's) connects only where the health
// check did, inside allowed_cidrs.
func (s *Snapshot) Dial(i int) string { return s.dials[i] }

// ByDial finds a routable target by the address Dial gives for it.
func (s *Snapshot) ByDial(dial string) *Target { return s.byDial[dial] }

// NoTargetReason explains an empty Routable list to a client or a log.
func (s *Snapshot) NoTargetReason(group string) string {
	switch {
	case s.Total == 0 && s.Draining == 0:
		return fmt.Sprintf("target group %q has no registered target", group)
	case s.Spec.Config.Type == TypeLambda:
		return fmt.Sprintf("target group %q has lambda targets, which this version cannot invoke", group)
	default:
		return fmt.Sprintf("target group %q has no routable target (%d initial, %d unhealthy, %d draining)", group, s.Initial, s.Unhealthy, s.Draining)
	}
}

func groupID(name string) string {
	sum := sha256.Sum256([]byte("target-group/" + name))
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	n := binary.BigEndian.Uint64(sum[:8])
	m := binary.BigEndian.Uint64(sum[8:16])
	b := make([]byte, 17)
	for i := range b {
		if i < 12 {
			b[i] = alphabet[n%36]
			n /= 36
		} else {
			b[i] = alphabet[m%36]
			m /= 36
		}
	}
	return "tg-" + string(b)
}

func newGroup(r *Registry, name string, spec *Spec, source string) *Group {
	g := &Group{reg: r, name: name, id: groupID(name), spec: spec, source: source, targets: make(map[TargetKey]*Target), tombstones: make(map[TargetKey]time.Time)}
	g.publish()
	return g
}

// Name is the group's name.
func (g *Group) Name() string { return g.name }

// ID is the group's stable identifier, "tg-" and 17 characters as in VPC Lattice.
func (g *Group) ID() string { return g.id }

// ARN is an ARN-style identifier of the group.
func (g *Group) ARN() string {
	return "arn:caddy:elasticloadbalancing:local:000000000000:targetgroup/" + g.name + "/" + g.id[3:]
}

// Snapshot returns the current immutable view of the group.
func (g *Group) Snapshot() *Snapshot { return g.snap.Load() }

// Source is SourceConfig or SourceAPI.
func (g *Group) Source() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.source
}

// Spec returns the group's current validated configuration.
func (g *Group) Spec() *Spec { return g.snap.Load().Spec }

// lock and unlock bracket every mutation; unlock emits the events that the
// mutation queued, outside the lock, so that event handlers may call back.
func (g *Group) lock() { g.mu.Lock() }

func (g *Group) unlock() {
	ev := g.pending
	g.pending = nil
	g.mu.Unlock()
	for _, e := range ev {
		g.reg.emit(e)
	}
}

// publish rebuilds the snapshot. Called with mu held (or before the group is shared).
func (g *Group) publish() {
	s := &Snapshot{Spec: g.spec, byDial: make(map[string]*Target), byKey: make(map[TargetKey]int), Zone: g.reg.Zone(), CrossZone: g.spec.CrossZone()}
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
	// A host name is routable only once it resolved inside allowed_cidrs.
	unresolved := func(t *Target) bool { return t.addr.Load() == nil }
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
	if g.spec.Config.Type == TypeLambda {
		s.Routable = nil
	}
	s.SlowStart = a.SlowStart
	s.slowSince = make([]int64, len(s.Routable))
	s.dials = make([]string, len(s.Routable))
	var weights []float64
	if a.Algorithm == AlgorithmWeightedRandom {
		weights = make([]float64, len(s.Routable))
	}
	for i, t := range s.Routable {
		s.dials[i] = t.addr.Load().s
		s.byDial[s.dials[i]] = t
		s.byKey[t.Key()] = i
		if !t.slowStartSince.IsZero() {
			s.slowSince[i] = t.slowStartSince.UnixNano()
			s.AnySlowStart = true
		}
		if weights != nil {
			weights[i] = float64(max(t.cfg.Weight, 1)) * t.multiplier()
		}
	}
	if a.Algorithm == AlgorithmWeightedRandom {
		s.Weights = selection.NewWeights(weights)
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

// setState changes a target's state, logs the change once and queues its
// events. Called with mu held.
func (g *Group) setState(t *Target, s State, reason, desc string) {
	old := t.state
	g.slowStart(t, old, s)
	if old == s && t.reason == reason {
		t.description = desc
		return
	}
	t.state, t.reason, t.description = s, reason, desc
	if old == s {
		return
	}
	g.reg.logger.Info("target state changed",
		zap.String("group", g.name),
		zap.String("target", t.Key().String()),
		zap.String("old", string(old)),
		zap.String("new", string(s)),
		zap.String("reason", reason),
		zap.String("description", desc))
	data := map[string]any{
		"group": g.name, "target": t.key.ID, "port": t.key.Port, "host": t.dial,
		"old": string(old), "new": string(s), "reason": reason,
	}
	g.pending = append(g.pending, event{name: "target_state_changed", data: data})
	switch s {
	case StateHealthy:
		g.pending = append(g.pending, event{name: "healthy", data: data})
	case StateUnhealthy:
		g.pending = append(g.pending, event{name: "unhealthy", data: data})
	}
}

// slowStart applies the ALB rules as t goes from old to s: a target enters
// slow start when it becomes healthy while at least one other healthy target
// is not in slow start; leaving healthy (unhealthy, draining) ends it.
func (g *Group) slowStart(t *Target, old, s State) {
	if s != StateHealthy {
		t.slowStartSince = time.Time{}
		return
	}
	if old == StateHealthy {
		return
	}
	exempt := t.noSlowStart
	t.noSlowStart = false
	dur := g.spec.Attributes.SlowStart
	if dur <= 0 || exempt {
		return
	}
	now := g.reg.clock.Now()
	for _, o := range g.targets {
		if o != t && o.state == StateHealthy && !o.inSlowStart(now, dur) {
			t.slowStartSince = now
			return
		}
	}
}

func (t *Target) inSlowStart(now time.Time, dur time.Duration) bool {
	return !t.slowStartSince.IsZero() && now.Sub(t.slowStartSince) < dur
}

// checkingState is the state a target starts in under the current spec.
func (g *Group) initialState(t *Target) {
	t.threshold.Reset()
	if !g.spec.HealthCheck.Enabled {
		g.setState(t, StateUnavailable, ReasonHealthCheckDisabled, "Health checks are disabled")
		return
	}
	g.setState(t, StateInitial, ReasonRegistrationInProgress, "Target registration is in progress")
}

// register adds targets (already validated) or revives draining ones.
// Called with mu held; the caller publishes.
func (g *Group) register(cfgs []TargetConfig, o owner) {
	now := g.reg.clock.Now()
	// Targets registered in one call into an empty group don't slow start.
	empty := true
	for _, t := range g.targets {
		if t.state != StateDraining {
			empty = false
			break
		}
	}
	for _, c := range cfgs {
		t := g.targets[c.Key()]
		switch {
		case t == nil:
			t = newTarget(g, c, o, now)
			t.noSlowStart = empty
			g.targets[c.Key()] = t
			g.added = append(g.added, t)
			g.initialState(t)
		case t.state == StateDraining:
			// AWS makes you wait out the deregistration delay; we bring the
			// target back at once, through initial health checking.
			g.stopDrain(t)
			t.owner, t.cfg.AvailabilityZone, t.cfg.Weight, t.registeredAt = o, c.AvailabilityZone, c.Weight, now
			t.misfit = "" // validated against the config in force
			t.noSlowStart = empty
			g.initialState(t)
		default:
			if o == ownerConfig {
				t.owner = ownerConfig
			}
			t.cfg.AvailabilityZone, t.cfg.Weight = c.AvailabilityZone, c.Weight
			continue
		}
		g.reg.schedule(g, t)
	}
}

// deregister starts draining targets. Called with mu held; the caller publishes.
func (g *Group) deregister(keys []TargetKey) {
	delay := g.spec.Attributes.DeregistrationDelay
	for _, k := range keys {
		t := g.targets[k]
		if t == nil || t.state == StateDraining {
			continue
		}
		g.reg.unschedule(g, t)
		g.stopUnhealthyDrain(t)
		t.draining.Store(true)
		g.setState(t, StateDraining, ReasonDeregistrationInProgress, "Target deregistration is in progress")
		t.drainUntil = g.reg.clock.Now().Add(delay)
		t.drainTimer = g.reg.clock.AfterFunc(delay, func() { g.finishDrain(t) })
		if t.inflight.Load() == 0 {
			g.pending = append(g.pending, event{name: "drained", data: map[string]any{"group": g.name, "target": t.key.ID, "port": t.key.Port}})
		}
	}
}

func (g *Group) stopDrain(t *Target) {
	if t.drainTimer != nil {
		t.drainTimer.Stop()
		t.drainTimer = nil
	}
	t.draining.Store(false)
}

// drained runs when the last in-flight request of a draining target ends:
// deregistration is complete, though the target shows draining until the
// delay ends (ALB).
func (g *Group) drained(t *Target) {
	g.lock()
	if g.targets[t.Key()] == t && t.state == StateDraining {
		g.reg.logger.Info("target drained", zap.String("group", g.name), zap.String("target", t.Key().String()))
		g.pending = append(g.pending, event{name: "drained", data: map[string]any{"group": g.name, "target": t.key.ID, "port": t.key.Port}})
	}
	g.unlock()
}

func (g *Group) finishDrain(t *Target) {
	g.lock()
	defer g.unlock()
	if g.targets[t.Key()] != t || t.state != StateDraining {
		return
	}
	delete(g.targets, t.Key())
	t.drainTimer = nil
	if n := t.inflight.Load(); n > 0 {
		closed := 0
		if g.spec.Attributes.ConnectionTermination {
			closed = t.closeConns()
		}
		// HTTP requests still in flight are left to finish: reverse_proxy owns
		// them, and cutting them would turn a slow response into an error.
		// Layer 4 connections are closed when connection termination is on.
		g.reg.logger.Warn("deregistration delay ended with requests in flight",
			zap.String("group", g.name), zap.String("target", t.Key().String()), zap.Int64("in_flight", n), zap.Int("connections_closed", closed))
	}
	g.setState(t, StateUnused, ReasonNotRegistered, "Target is not registered to the target group")
	g.publish()
}

// setSpec installs a new validated spec, keeping every target's health.
// Called with mu held; the caller publishes.
func (g *Group) setSpec(s *Spec) {
	old := g.spec
	g.spec = s
	if old.HealthCheck.Enabled == s.HealthCheck.Enabled {
		for _, t := range g.targets {
			if t.state != StateDraining {
				g.reg.schedule(g, t)
			}
		}
		return
	}
	for _, t := range g.targets {
		if t.state == StateDraining || t.misfit != "" {
			continue
		}
		g.initialState(t)
		g.reg.schedule(g, t)
	}
}

// close stops every timer and check of a group that leaves the registry.
func (g *Group) close() {
	g.lock()
	defer g.unlock()
	g.closed = true
	for _, t := range g.targets {
		g.reg.unschedule(g, t)
		g.stopDrain(t)
		g.stopUnhealthyDrain(t)
	}
}

// check runs one health check of t and applies its result. A host name is
// resolved first, at every check, which is how a changed DNS record is
// noticed, and only an address inside allowed_cidrs is ever probed. With
// health checks off, a host name is still resolved on this schedule, so that
// traffic follows its DNS record under the same rule.
func (g *Group) check(ctx context.Context, t *Target) {
	g.lock()
	spec := g.spec
	enabled := spec.HealthCheck.Enabled
	if g.closed || g.targets[t.key] != t || t.state == StateDraining || t.misfit != "" || !enabled && !t.named() {
		g.unlock()
		return
	}
	if enabled && t.state == StateInitial && t.reason == ReasonRegistrationInProgress {
		g.setState(t, StateInitial, ReasonInitialHealthChecking, "Initial health checks in progress")
	}
	g.unlock()

	ip := t.ip
	if !ip.IsValid() {
		rctx, cancel := context.WithTimeout(ctx, spec.HealthCheck.Probe.Timeout)
		var err error
		ip, err = g.reg.resolve(rctx, t.key.ID, spec.Config.IPAddressType, t.key.Port)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// Like a stopped instance to AWS: unused, and never connected to.
			g.observe(t, spec, healthcheck.Result{}, netip.Addr{}, err)
			return
		}
	}
	if !enabled {
		g.observe(t, spec, healthcheck.Result{}, ip, nil)
		return
	}
	port := t.key.Port
	if spec.HealthCheck.Port != 0 {
		port = spec.HealthCheck.Port
	}
	probe := netip.AddrPortFrom(ip, uint16(port))
	if err := g.reg.checkDial(probe); err != nil {
		g.observe(t, spec, healthcheck.Result{}, netip.Addr{}, fmt.Errorf("health check of %s: %v", t.key, err))
		return
	}
	network := "tcp4"
	if spec.Config.IPAddressType == IPv6 {
		network = "tcp6"
	}
	res := g.reg.prober.Probe(ctx, network, probe.String(), spec.HealthCheck.Probe)
	if ctx.Err() != nil {
		return // the scheduler stopped: a cancelled check says nothing about the target
	}
	g.observe(t, spec, res, ip, nil)
}

// observe applies one health check result to t: the threshold state machine,
// then the state AWS would report. ip is the address the check went to;
// invalid is set when there was none to check (a host name that does not
// resolve inside allowed_cidrs). With health checks off, only the address
// matters.
func (g *Group) observe(t *Target, spec *Spec, res healthcheck.Result, ip netip.Addr, invalid error) {
	g.lock()
	defer g.unlock()
	if g.closed || g.targets[t.key] != t || t.state == StateDraining || t.misfit != "" || g.spec != spec {
		return
	}
	old := t.state
	moved := false
	defer func() {
		if t.state != old || moved {
			g.publish()
		}
	}()
	if invalid != nil {
		if t.named() && t.addr.Load() != nil {
			t.addr.Store(nil)
			moved = true
		}
		g.stopUnhealthyDrain(t)
		g.setState(t, StateUnused, ReasonInvalidState, invalid.Error())
		if old != StateUnused {
			t.closeConns()
		}
		return
	}
	if t.named() {
		if a := t.addr.Load(); a == nil || a.ap.Addr() != ip {
			// Connections already open stay where they are; new ones go to
			// the new address.
			t.addr.Store(newDialAddr(ip, t.key.Port))
			moved = true
		}
	}
	if !spec.HealthCheck.Enabled {
		if t.state == StateUnused {
			g.setState(t, StateUnavailable, ReasonHealthCheckDisabled, "Health checks are disabled")
		}
		return
	}
	if t.state == StateUnused {
		// Resolvable again: start over, as a newly registered target.
		t.threshold.Reset()
		g.setState(t, StateInitial, ReasonInitialHealthChecking, "Initial health checks in progress")
	}
	hc := spec.HealthCheck
	t.threshold.Observe(res.Healthy, hc.HealthyThreshold, hc.UnhealthyThreshold)
	switch t.threshold.Status {
	case healthcheck.StatusHealthy:
		g.stopUnhealthyDrain(t)
		g.setState(t, StateHealthy, "", "")
	case healthcheck.StatusUnhealthy:
		if res.Healthy {
			return // passes towards the healthy threshold keep the last failure's reason
		}
		a := spec.Attributes
		switch {
		case t.state == StateUnhealthyDraining:
			t.reason, t.description = res.Reason, res.Description
		case t.state != StateUnhealthy && !a.UnhealthyConnTermination && a.UnhealthyDrainingInterval > 0:
			// NLB: connections to a target that turns unhealthy are kept for
			// the draining interval before it is plain unhealthy.
			g.setState(t, StateUnhealthyDraining, res.Reason, res.Description)
			t.unhealthyTimer = g.reg.clock.AfterFunc(a.UnhealthyDrainingInterval, func() { g.endUnhealthyDrain(t) })
		default:
			g.setState(t, StateUnhealthy, res.Reason, res.Description)
			if a.UnhealthyConnTermination {
				t.closeConns()
			}
		}
	}
}

// revalidate checks every registered target against the group's current
// spec and allow-list after a config load: a target that no longer fits
// (allowed_cidrs narrowed, ip_address_type or type changed, a second target
// in a lambda or alb group) is unused and gets no traffic until a later
// load makes it fit again, when it starts over through initial checks.
// Called with mu held; the caller publishes.
func (g *Group) revalidate(allowed []netip.Prefix) {
	single := g.spec.Config.Type == TypeLambda || g.spec.Config.Type == TypeALB
	kept := 0
	// Config targets first: they are the ones a single-target group keeps.
	for _, owners := range []owner{ownerConfig, ownerAPI} {
		for _, t := range g.sortedTargets() {
			if t.owner != owners || t.state == StateDraining {
				continue
			}
			why := ""
			if _, err := g.spec.NormalizeTarget(t.cfg, allowed); err != nil {
				why = err.Error()
			} else if single && kept > 0 {
				why = fmt.Sprintf("a %s target group holds a single target", g.spec.Config.Type)
			} else {
				kept++
			}
			g.setMisfit(t, why)
		}
	}
}

func (g *Group) setMisfit(t *Target, why string) {
	switch {
	case why != "":
		first := t.misfit == ""
		t.misfit = why
		g.reg.unschedule(g, t)
		g.stopUnhealthyDrain(t)
		g.setState(t, StateUnused, ReasonInvalidState, "Target does not fit the target group's configuration: "+why)
		if first {
			g.reg.logger.Warn("target no longer fits its target group's configuration; it gets no traffic",
				zap.String("group", g.name), zap.String("target", t.key.String()), zap.String("why", why))
			t.closeConns()
		}
	case t.misfit != "":
		t.misfit = ""
		if t.named() {
			t.addr.Store(nil) // resolved again by its first check
		}
		g.initialState(t)
		g.reg.schedule(g, t)
	}
}

// mitigate runs anomaly mitigation over the group's live targets and
// republishes when a multiplier changed. Only the registry's mitigation
// loop calls it, never concurrently with itself.
func (g *Group) mitigate(now time.Time) {
	g.lock()
	defer g.unlock()
	if !g.spec.Attributes.AnomalyMitigation {
		return
	}
	var ts []*Target
	for _, t := range g.sortedTargets() {
		if t.state != StateDraining {
			ts = append(ts, t)
		}
	}
	stats := make([]*selection.Stats, len(ts))
	for i, t := range ts {
		stats[i] = &t.stats
	}
	changed := false
	for i, m := range selection.Mitigate(stats, now) {
		if ts[i].mult != m {
			ts[i].mult, changed = m, true
		}
	}
	if changed {
		g.publish()
	}
}

// ObserveRequest feeds anomaly detection with one proxied request to t. It
// takes no lock.
func (g *Group) ObserveRequest(t *Target, latency time.Duration, failed bool) {
	if t != nil && g.Spec().Attributes.AnomalyMitigation {
		t.stats.Observe(latency, failed)
	}
}

// ReportProxyResult feeds passive health: the outcome of one proxied request
// to t. It takes no lock unless the target must turn unhealthy.
func (g *Group) ReportProxyResult(t *Target, failed bool, desc string) {
	if t == nil {
		return
	}
	n := g.Spec().HealthCheck.PassiveThreshold
	if n == 0 {
		return
	}
	if !failed {
		if t.proxyFails.Load() != 0 {
			t.proxyFails.Store(0)
		}
		return
	}
	if t.proxyFails.Add(1) < int32(n) {
		return
	}
	t.proxyFails.Store(0)
	g.lock()
	defer g.unlock()
	if g.targets[t.Key()] != t || t.state != StateHealthy {
		return
	}
	// Active checks must now pass healthy_threshold times to bring it back.
	t.threshold = healthcheck.Threshold{Status: healthcheck.StatusUnhealthy}
	g.setState(t, StateUnhealthy, ReasonFailedHealthChecks, fmt.Sprintf("%d consecutive proxied requests failed (passive health check); last: %s", n, desc))
	if g.spec.Attributes.UnhealthyConnTermination {
		t.closeConns()
	}
	g.publish()
}

func (g *Group) endUnhealthyDrain(t *Target) {
	g.lock()
	defer g.unlock()
	if g.targets[t.Key()] == t && t.state == StateUnhealthyDraining {
		t.unhealthyTimer = nil
		g.setState(t, StateUnhealthy, t.reason, t.description)
		t.closeConns()
		g.publish()
	}
}

func (g *Group) stopUnhealthyDrain(t *Target) {
	if t.unhealthyTimer != nil {
		t.unhealthyTimer.Stop()
		t.unhealthyTimer = nil
	}
}
