package targetgroup

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-targetgroup/caddy-targetgroup/healthcheck"
	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
)

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

	if spec.Config.Type == TypeLambda {
		g.checkLambda(ctx, t, spec)
		return
	}
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
	t.metrics.checked(res.Healthy)
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
	before := make([]float64, len(ts))
	for i, t := range ts {
		stats[i], before[i] = &t.stats, t.stats.Multiplier()
	}
	changed := false
	for i, m := range selection.Mitigate(stats, now) {
		changed = changed || m != before[i]
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
