package targetgroup

import (
	"strings"
	"testing"
	"time"
)

// Draining targets count toward max_targets_per_group: register/deregister
// cycles can't grow a group past it.
func TestDrainingTargetsCountTowardTheQuota(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Attributes: map[string]string{AttrDeregistrationDelay: "300"}})
	limits := Limits{MaxTargetsPerGroup: 10}.withDefaults()
	l.reg.limits.Store(&limits)
	batch := func(cycle int) []TargetConfig {
		ts := make([]TargetConfig, 10)
		for i := range ts {
			ts[i] = TargetConfig{ID: "127.0.0.1", Port: 1000*cycle + i + 1}
		}
		return ts
	}
	mustRegister(t, l.reg, "web", batch(0))
	must(t, l.reg.DeregisterTargets("web", batch(0)))
	for cycle := 1; cycle < 5; cycle++ {
		_, err := l.reg.RegisterTargets("web", batch(cycle))
		expectRefusal(t, "registering past the quota", err, KindQuota)
		if msg := err.Error(); !strings.Contains(msg, "draining") || !strings.Contains(msg, "max_targets_per_group is 10") {
			t.Fatalf("the quota error does not say draining targets count: %v", err)
		}
		_ = l.reg.DeregisterTargets("web", batch(cycle))
	}
	if n := len(l.g.DescribeTargetHealth()); n != 10 {
		t.Fatalf("the group holds %d targets under a quota of 10", n)
	}
	// Bringing a draining target back adds none.
	mustRegister(t, l.reg, "web", batch(0)[:1])
	// Once the delay is over, the drained ones make room.
	l.clock.Advance(300 * time.Second)
	mustRegister(t, l.reg, "web", batch(1)[:9])
	if n := len(l.g.DescribeTargetHealth()); n != 10 {
		t.Fatalf("%d targets after the delay, want 10", n)
	}
}

// configGroup is a registry with config group "web": a config target on
// port 1 in zone "a" with weight 5, and a config target on port 2 with
// neither.
func configGroup(t *testing.T) (*Registry, *Group) {
	t.Helper()
	r := startRegistry(t, newFlakyStorage(t), newTestClock(), map[string]*GroupConfig{"web": {
		HealthCheck: &HealthCheckConfig{Enabled: &noChecks},
		Attributes:  map[string]string{AttrAlgorithm: AlgorithmWeightedRandom},
		Targets:     []TargetConfig{{ID: "127.0.0.1", Port: 1, AvailabilityZone: "a", Weight: 5}, {ID: "127.0.0.1", Port: 2}},
	}})
	return r, r.Group("web")
}

// The API can't change the zone or weight of a target the config declares:
// registering it as the config has it changes nothing, otherwise it is
// refused naming the target and the field.
func TestConfigTargetsKeepTheirZoneAndWeight(t *testing.T) {
	r, g := configGroup(t)
	before := fingerprint(t, r)
	mustRegister(t, r, "web", []TargetConfig{{ID: "127.0.0.1", Port: 1, AvailabilityZone: "a", Weight: 5}})
	mustRegister(t, r, "web", []TargetConfig{{ID: "127.0.0.1", Port: 2, Weight: 1}}) // 1 is the default weight
	if after := fingerprint(t, r); after != before {
		t.Fatalf("registering config targets as declared changed the state:\nbefore %s\nafter  %s", before, after)
	}
	for _, c := range []struct {
		target TargetConfig
		field  string
	}{
		{TargetConfig{ID: "127.0.0.1", Port: 1, AvailabilityZone: "b", Weight: 5}, "availability_zone"},
		{TargetConfig{ID: "127.0.0.1", Port: 1, AvailabilityZone: "a", Weight: 7}, "weight"},
		{TargetConfig{ID: "127.0.0.1", Port: 1, AvailabilityZone: "a"}, "weight"},
		{TargetConfig{ID: "127.0.0.1", Port: 2, AvailabilityZone: "c"}, "availability_zone"},
	} {
		_, err := r.RegisterTargets("web", []TargetConfig{{ID: "127.0.0.1", Port: 3}, c.target})
		expectRefusal(t, "changing "+c.field, err, KindNotPermitted)
		if msg := err.Error(); !strings.Contains(msg, "targets[1]."+c.field) || !strings.Contains(msg, c.target.Key().String()) {
			t.Fatalf("the refusal does not name the target and the field %s: %v", c.field, err)
		}
		if after := fingerprint(t, r); after != before {
			t.Fatalf("a refused call changed the state:\nbefore %s\nafter  %s", before, after)
		}
	}
	// An API target's zone and weight are the API's.
	mustRegister(t, r, "web", []TargetConfig{{ID: "127.0.0.1", Port: 3, AvailabilityZone: "a"}})
	mustRegister(t, r, "web", []TargetConfig{{ID: "127.0.0.1", Port: 3, AvailabilityZone: "b", Weight: 9}})
	if d := g.DescribeTargetHealth(TargetKey{ID: "127.0.0.1", Port: 3})[0].Target; d.AvailabilityZone != "b" || d.Weight != 9 {
		t.Fatalf("API target after re-registration: %+v", d)
	}
}
