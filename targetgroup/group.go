package targetgroup

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
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

	mu          sync.Mutex
	spec        *Spec
	source      string
	created     *GroupConfig // creation parameters, for idempotent CreateTargetGroup
	clientToken string
	// When the group was created and last changed its settings, as VPC
	// Lattice's createdAt and lastUpdatedAt report them.
	createdAt, updatedAt time.Time
	targets              map[TargetKey]*Target
	// order is targets sorted by (id, port), kept up to date by merging
	// the targets added since (added) instead of sorting the whole group
	// on every registration. Both only grow between rebuilds, so after a
	// removal they hold more targets than the map: that is what makes
	// sortedTargets rebuild.
	order   []*Target
	added   []*Target
	closed  bool
	pending []event // emitted once mu is released

	// flows are the live UDP flows, bounded by max_udp_flows_per_group.
	flows flowTable

	snap atomic.Pointer[Snapshot]
	// stick is the stickiness of spec, derived when the spec is installed
	// rather than on every request.
	stick Stickiness
	// rr is the group's round-robin cursor, which every snapshot shares.
	rr atomic.Uint64
	// stateGen counts the changes of its targets' states and reasons, so
	// that the sync loop passes over groups whose health did not change.
	stateGen atomic.Uint64
}

// Group ids are "tg-" and 17 lowercase hex characters, as VPC Lattice's:
// derived from the name for a group the config declares (every node and
// every start agree without storing it), random for a group created
// through an API (stored with it, so every node and every start agree).
const idHexLen = 17

func groupID(name string) string {
	sum := sha256.Sum256([]byte("target-group/" + name))
	return "tg-" + hex.EncodeToString(sum[:9])[:idHexLen]
}

func randomGroupID() string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	return "tg-" + hex.EncodeToString(b[:])[:idHexLen]
}

// validGroupID reports whether id has the form of a group id.
func validGroupID(id string) bool {
	hexPart, ok := strings.CutPrefix(id, "tg-")
	if !ok || len(hexPart) != idHexLen {
		return false
	}
	for _, c := range hexPart {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func newGroup(r *Registry, name string, spec *Spec, source string) *Group {
	return newGroupWithID(r, name, groupID(name), spec, source)
}

func newGroupWithID(r *Registry, name, id string, spec *Spec, source string) *Group {
	g := &Group{reg: r, name: name, id: id, spec: spec, stick: stickinessOf(spec.Attributes), source: source, targets: make(map[TargetKey]*Target)}
	g.createdAt = r.clock.Now().UTC().Truncate(time.Millisecond)
	g.updatedAt = g.createdAt
	g.publish()
	return g
}

// Name is the group's name.
func (g *Group) Name() string { return g.name }

// Times returns when the group was created and when its settings last
// changed.
func (g *Group) Times() (created, updated time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.createdAt, g.updatedAt
}

// setTimes takes the times a settings entry records, where it has them.
// Called with mu held, or before the group is published.
func (g *Group) setTimes(s *settingsEntry) {
	if !s.CreatedAt.IsZero() {
		g.createdAt = s.CreatedAt
	}
	switch {
	case !s.UpdatedAt.IsZero():
		g.updatedAt = s.UpdatedAt
	case s.HLC.Wall > 0:
		g.updatedAt = time.UnixMilli(s.HLC.Wall).UTC()
	}
}

// ID is the group's stable identifier, "tg-" and 17 lowercase hex
// characters as in VPC Lattice.
func (g *Group) ID() string { return g.id }

// ARN is the group's ELBv2 ARN, in the app's region and account:
// arn:aws:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<the id's first 16 hex>.
func (g *Group) ARN() string {
	region, account := g.reg.Account()
	return "arn:aws:elasticloadbalancing:" + region + ":" + account + ":targetgroup/" + g.name + "/" + g.id[3:3+16]
}

// LatticeARN is the group's VPC Lattice ARN:
// arn:aws:vpc-lattice:<region>:<account>:targetgroup/<id>.
func (g *Group) LatticeARN() string {
	region, account := g.reg.Account()
	return "arn:aws:vpc-lattice:" + region + ":" + account + ":targetgroup/" + g.id
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
	g.stateGen.Add(1)
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

// initialState puts t in the state a target starts in under the current
// spec: initial, or unavailable when health checks are off.
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
		g.pending = append(g.pending, event{name: "target_registered", data: g.targetData(t)})
		g.reg.schedule(g, t)
	}
}

// deregister starts draining targets for the group's deregistration delay.
// Called with mu held; the caller publishes.
func (g *Group) deregister(keys []TargetKey) {
	g.deregisterUntil(keys, g.reg.clock.Now().Add(g.spec.Attributes.DeregistrationDelay))
}

// deregisterUntil starts draining targets until the given time, which the
// node whose API deregistered them set, so that they leave the group at
// the same time on every node. Called with mu held; the caller publishes.
func (g *Group) deregisterUntil(keys []TargetKey, until time.Time) {
	delay := max(until.Sub(g.reg.clock.Now()), 0)
	for _, k := range keys {
		t := g.targets[k]
		if t == nil || t.state == StateDraining {
			continue
		}
		g.reg.unschedule(g, t)
		g.stopUnhealthyDrain(t)
		t.draining.Store(true)
		g.setState(t, StateDraining, ReasonDeregistrationInProgress, "Target deregistration is in progress")
		t.drainUntil = until
		g.pending = append(g.pending, event{name: "target_deregistered", data: g.targetData(t)})
		t.drainTimer = g.reg.clock.AfterFunc(delay, func() { g.finishDrain(t) })
		if t.inflight.Load() == 0 {
			g.pending = append(g.pending, event{name: "drained", data: map[string]any{"group": g.name, "target": t.key.ID, "port": t.key.Port}})
		}
	}
}

// targetData is the data of an event about t.
func (g *Group) targetData(t *Target) map[string]any {
	return map[string]any{"group": g.name, "target": t.key.ID, "port": t.key.Port}
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
	t.metrics.forget()
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

// reconcileConfigTargets registers the config's targets and drains config
// targets that the config no longer lists. Called with mu held.
func (g *Group) reconcileConfigTargets(want []TargetConfig) {
	keep := make(map[TargetKey]bool, len(want))
	for _, t := range want {
		keep[t.Key()] = true
	}
	var gone []TargetKey
	for k, t := range g.targets {
		if t.owner == ownerConfig && !keep[k] && t.state != StateDraining {
			gone = append(gone, k)
		}
	}
	g.deregister(gone)
	g.register(want, ownerConfig)
}

// setSpec installs a new validated spec, keeping every target's health.
// Called with mu held; the caller publishes.
func (g *Group) setSpec(s *Spec) {
	old := g.spec
	g.spec = s
	g.stick = stickinessOf(s.Attributes)
	g.updatedAt = g.reg.clock.Now().UTC().Truncate(time.Millisecond)
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
	forgetGroupMetrics(g.name)
	for _, t := range g.targets {
		g.reg.unschedule(g, t)
		g.stopDrain(t)
		g.stopUnhealthyDrain(t)
	}
}
