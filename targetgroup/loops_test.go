package targetgroup

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// The registry's background loops run on its clock: these tests step a fake
// one through their periods.

// waitArmed waits until a timer of the clock is set for at: a loop has
// finished its run and waits for the next.
func (l *lifecycle) waitArmed(at time.Time) {
	l.t.Helper()
	eventually(l.t, "a timer set for "+at.Format(time.TimeOnly), func() bool { return l.clock.armedAt(at) })
}

func TestBackgroundLoopPeriods(t *testing.T) {
	r := newRegistry(zap.NewNop())
	defer r.Destruct()
	if r.mitigateEvery != 5*time.Second || r.rotateKeysEvery != time.Hour {
		t.Fatalf("anomaly mitigation every %v, key ring read every %v; want 5s and 1h", r.mitigateEvery, r.rotateKeysEvery)
	}
}

// TestAnomalyMitigationRunsOnItsPeriod: under weighted_random with anomaly
// mitigation, a target failing most of its requests is found anomalous at
// the mitigation loop's next run, not before; its share of the traffic is
// lowered, and its health is left alone.
func TestAnomalyMitigationRunsOnItsPeriod(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Attributes: map[string]string{
		AttrAlgorithm: AlgorithmWeightedRandom, AttrAnomalyMitigation: "on",
	}})
	l.register(local(1, 2, 3, 4)...)
	for port := 1; port <= 4; port++ {
		l.check(port, true)
	}
	const bad = 4
	// The detector wants about 50 requests per target in its window.
	for range 60 {
		for port := 1; port <= 4; port++ {
			l.g.ObserveRequest(l.target(port), 5*time.Millisecond, port == bad)
		}
	}
	anomaly := func(port int) AnomalyDetection {
		d := l.g.DescribeTargetHealth(TargetKey{"127.0.0.1", port})[0]
		if d.AnomalyDetection == nil {
			t.Fatalf("no anomaly detection for target %d of a weighted_random group", port)
		}
		return *d.AnomalyDetection
	}
	l.reg.startLoops()
	start := l.clock.Now()
	l.clock.Advance(l.reg.mitigateEvery - time.Millisecond)
	if a := anomaly(bad); a.Result != "normal" || a.MitigationInEffect != "no" {
		t.Fatalf("before the loop's first run: %+v", a)
	}
	l.clock.Advance(time.Millisecond)
	l.waitArmed(start.Add(2 * l.reg.mitigateEvery))
	if a := anomaly(bad); a.Result != "anomalous" || a.MitigationInEffect != "yes" {
		t.Fatalf("after the loop ran: %+v, want anomalous and mitigated", a)
	}
	for port := 1; port < bad; port++ {
		if a := anomaly(port); a.Result != "normal" || a.MitigationInEffect != "no" {
			t.Fatalf("target %d: %+v", port, a)
		}
	}
	// Its weight is now at most half, at best a tenth: of 400 picks it gets
	// about 3 % (0.1 of 3.1); 10 % is more than 7 binomial standard
	// deviations above that, and a quarter is what it had before.
	s := l.g.Snapshot()
	picked := 0
	for range 400 {
		if s.Routable[s.Pick(PickRequest{})].cfg.Port == bad {
			picked++
		}
	}
	if picked > 40 {
		t.Fatalf("the mitigated target got %d of 400 picks", picked)
	}
	l.expect(bad, StateHealthy, "")
}

// TestKeyRingReadOnItsPeriod: the sticky cookie key ring is read when the
// loops start and again every period, which is when a key past the
// rotation age is replaced by a newer one.
func TestKeyRingReadOnItsPeriod(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	keys := func() int {
		l.reg.keyMu.Lock()
		defer l.reg.keyMu.Unlock()
		return len(l.reg.memKeys)
	}
	l.reg.startLoops()
	start := l.clock.Now()
	if n := keys(); n != 1 || l.reg.Keyring() == nil {
		t.Fatalf("%d keys once the loops started, want 1 and a key ring", n)
	}
	period := l.reg.rotateKeysEvery
	l.clock.Advance(period)
	l.waitArmed(start.Add(2 * period))
	if n := keys(); n != 1 {
		t.Fatalf("%d keys after one period, want the first key only", n)
	}
	// A day passes in one step: the next run finds the key due for
	// rotation.
	l.clock.Advance(keyRotation)
	l.waitArmed(start.Add(period + keyRotation + period))
	if n := keys(); n != 2 {
		t.Fatalf("%d keys once the first is %v old, want 2", n, keyRotation+period)
	}
}

func loopBoom() { panic("boom") }

// TestBackgroundLoopSurvivesPanics: a panic in a loop's run is logged with
// its stack, and the loop runs again at its next turn.
func TestBackgroundLoopSurvivesPanics(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	core, logs := observer.New(zap.ErrorLevel)
	l.reg.logger = zap.New(core)
	var runs atomic.Int32
	l.reg.every("test loop", time.Second, func() {
		if runs.Add(1) == 1 {
			loopBoom()
		}
	})
	start := l.clock.Now()
	l.clock.Advance(time.Second)
	l.waitArmed(start.Add(2 * time.Second))
	entries := logs.FilterMessage("test loop panicked").All()
	if len(entries) != 1 {
		t.Fatalf("%d log entries for the panic: %v", len(entries), logs.All())
	}
	fields := entries[0].ContextMap()
	if fields["panic"] != "boom" || !strings.Contains(fields["stack"].(string), "targetgroup.loopBoom") {
		t.Fatalf("the panic is logged as %v, want its value and the stack of the panic site", fields)
	}
	l.clock.Advance(time.Second)
	l.waitArmed(start.Add(3 * time.Second))
	if n := runs.Load(); n != 2 {
		t.Fatalf("%d runs, want the loop to go on after the panic", n)
	}
}
