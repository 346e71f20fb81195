package targetgroup

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/caddy-targetgroup/caddy-targetgroup/healthcheck"
)

// The life of a target: health states and their events, draining,
// re-registration, unhealthy draining, slow start.

func TestHealthStateMachine(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	l.register(local(1)...)
	l.expect(1, StateInitial, ReasonRegistrationInProgress)

	// First pass: healthy at once, whatever the healthy threshold (5).
	l.check(1, true)
	l.expect(1, StateHealthy, "")
	if len(l.g.Snapshot().Routable) != 1 {
		t.Fatal("healthy target not routable")
	}
	// unhealthy_threshold (2) consecutive failures.
	l.check(1, false)
	l.expect(1, StateHealthy, "")
	l.check(1, false)
	l.expect(1, StateUnhealthy, ReasonResponseCodeMismatch)
	// healthy_threshold (5) consecutive passes; a failure restarts the run.
	for i := 0; i < 4; i++ {
		l.check(1, true)
	}
	l.check(1, false)
	for i := 0; i < 4; i++ {
		l.check(1, true)
	}
	l.expect(1, StateUnhealthy, ReasonResponseCodeMismatch)
	l.check(1, true)
	l.expect(1, StateHealthy, "")
	for _, e := range []string{"target_state_changed:initial->healthy", "target_state_changed:healthy->unhealthy", "target_state_changed:unhealthy->healthy", "healthy", "unhealthy"} {
		if !l.hasEvent(e) {
			t.Errorf("no %s event in %v", e, l.events)
		}
	}
}

func TestDrainingLifecycle(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Attributes: map[string]string{AttrDeregistrationDelay: "30"}})
	l.register(local(1, 2)...)
	l.check(1, true)
	l.check(2, true)
	lease := l.target(1).Acquire()

	l.deregister(local(1)...)
	l.expect(1, StateDraining, ReasonDeregistrationInProgress)
	if r := l.g.Snapshot().Routable; len(r) != 1 || r[0].cfg.Port != 2 {
		t.Fatal("a draining target is still routable")
	}
	if l.hasEvent("drained") {
		t.Fatal("drained before its last request ended")
	}
	// Health checks of a draining target are ignored.
	l.check(1, false)
	l.expect(1, StateDraining, ReasonDeregistrationInProgress)

	l.clock.Advance(10 * time.Second)
	lease.Release()
	if !l.hasEvent("drained") {
		t.Fatal("no drained event when the last request ended")
	}
	// Deregistration is complete, yet the target shows draining until the delay ends.
	l.expect(1, StateDraining, ReasonDeregistrationInProgress)
	l.clock.Advance(19 * time.Second)
	l.expect(1, StateDraining, ReasonDeregistrationInProgress)
	l.clock.Advance(time.Second)
	l.expect(1, StateUnused, ReasonNotRegistered)
	if n := len(l.g.DescribeTargetHealth()); n != 1 {
		t.Fatalf("%d targets described, want 1", n)
	}
}

func TestDrainingWithNothingInFlightIsDrainedAtOnce(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	l.register(local(1)...)
	l.deregister(local(1)...)
	if !l.hasEvent("drained") {
		t.Fatal("no drained event")
	}
	l.expect(1, StateDraining, ReasonDeregistrationInProgress)
	l.clock.Advance(300 * time.Second)
	l.expect(1, StateUnused, ReasonNotRegistered)
}

func TestReRegisterWhileDraining(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	l.register(local(1)...)
	l.check(1, true)
	l.deregister(local(1)...)
	l.clock.Advance(100 * time.Second)
	l.register(local(1)...)
	l.expect(1, StateInitial, ReasonRegistrationInProgress)
	// The old drain timer must not remove the revived target.
	l.clock.Advance(300 * time.Second)
	l.expect(1, StateInitial, ReasonRegistrationInProgress)
	l.check(1, true)
	l.expect(1, StateHealthy, "")
}

func TestUnhealthyDrainingInterval(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Protocol: "TCP", Port: 5432, Attributes: map[string]string{
		AttrUnhealthyConnTermination: "false", AttrUnhealthyDrainingInterval: "60",
	}})
	l.register(local(1)...)
	l.check(1, true)
	l.check(1, false)
	l.check(1, false)
	l.expect(1, StateUnhealthyDraining, ReasonResponseCodeMismatch)
	l.clock.Advance(59 * time.Second)
	l.expect(1, StateUnhealthyDraining, ReasonResponseCodeMismatch)
	l.clock.Advance(time.Second)
	l.expect(1, StateUnhealthy, ReasonResponseCodeMismatch)
}

func TestUnresolvableTargetIsUnused(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	l.register(local(1)...)
	l.check(1, true)
	l.g.observe(l.target(1), l.g.Spec(), healthcheck.Result{}, netip.Addr{}, errors.New("target host name x does not resolve"))
	l.expect(1, StateUnused, ReasonInvalidState)
	if len(l.g.Snapshot().Routable) != 0 {
		t.Fatal("an unresolvable target is routable")
	}
	l.check(1, true)
	l.expect(1, StateHealthy, "")
}

func TestDisabledHealthChecks(t *testing.T) {
	off := false
	l := newLifecycle(t, &GroupConfig{HealthCheck: &HealthCheckConfig{Enabled: &off}})
	l.register(local(1)...)
	l.expect(1, StateUnavailable, ReasonHealthCheckDisabled)
	if len(l.g.Snapshot().Routable) != 1 {
		t.Fatal("with health checks disabled every target gets traffic")
	}
}

func (l *lifecycle) slowRemaining(port int) int {
	l.t.Helper()
	return l.g.DescribeTargetHealth(TargetKey{"127.0.0.1", port})[0].SlowStartRemainingSeconds
}

func TestSlowStartRules(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Attributes: map[string]string{AttrSlowStart: "60"}})
	reg := func(ports ...int) { l.register(local(ports...)...) }
	// Targets registered in one call into an empty group don't slow start.
	reg(1, 2)
	l.check(1, true)
	l.check(2, true)
	if l.slowRemaining(1) != 0 || l.slowRemaining(2) != 0 {
		t.Fatal("targets of the first registration entered slow start")
	}
	// A target that becomes healthy next to steady healthy targets does.
	reg(3)
	l.check(3, true)
	if got := l.slowRemaining(3); got != 60 {
		t.Fatalf("remaining %d, want 60", got)
	}
	s := l.g.Snapshot()
	if _, in := s.SlowStartSince(s.Index(TargetKey{"127.0.0.1", 3}), l.clock.Now()); !in {
		t.Fatal("the snapshot does not show the slow start")
	}
	l.clock.Advance(45 * time.Second)
	if got := l.slowRemaining(3); got != 15 {
		t.Fatalf("remaining %d after 45s, want 15", got)
	}
	// Unhealthy ends it; healthy again re-enters it, from the start.
	l.check(3, false)
	l.check(3, false)
	l.expect(3, StateUnhealthy, ReasonResponseCodeMismatch)
	for i := 0; i < 5; i++ {
		l.check(3, true)
	}
	if got := l.slowRemaining(3); got != 60 {
		t.Fatalf("re-entered slow start with %d s left, want 60", got)
	}
	l.clock.Advance(60 * time.Second)
	if got := l.slowRemaining(3); got != 0 {
		t.Fatalf("slow start did not end: %d", got)
	}
	// Deregistration ends it.
	reg(4)
	l.check(4, true)
	if l.slowRemaining(4) == 0 {
		t.Fatal("target 4 did not slow start")
	}
	l.deregister(local(4)...)
	if l.slowRemaining(4) != 0 {
		t.Fatal("a draining target is still in slow start")
	}
	// A target becoming healthy while every other healthy one is in slow
	// start does not enter it.
	l2 := newLifecycle(t, &GroupConfig{Attributes: map[string]string{AttrSlowStart: "60"}})
	l2.register(local(1)...)
	l2.register(local(2)...)
	l2.check(2, true) // healthy first, alone: nothing steady beside it
	if l2.slowRemaining(2) != 0 {
		t.Fatal("a lone healthy target entered slow start")
	}
}

func TestEnablingSlowStartLeavesHealthyTargetsAlone(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	l.register(local(1)...)
	l.register(local(2)...)
	l.check(1, true)
	l.check(2, true)
	if err := l.reg.ModifyAttributes("web", map[string]string{AttrSlowStart: "30"}); err != nil {
		t.Fatal(err)
	}
	if l.slowRemaining(1) != 0 || l.slowRemaining(2) != 0 {
		t.Fatal("healthy targets entered slow start when it was enabled")
	}
	l.register(local(3)...)
	l.check(3, true)
	if l.slowRemaining(3) != 30 {
		t.Fatalf("new target: %d s of slow start, want 30", l.slowRemaining(3))
	}
}
