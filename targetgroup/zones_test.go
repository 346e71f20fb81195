package targetgroup

import (
	"fmt"
	"testing"
)

// zoneNode is one Caddy node (one registry) in the given zone, with the
// NLB seed's example group: zones a and b, 10 targets each, DNS and routing
// failover at 50 %.
func zoneNode(t *testing.T, zone, crossZone string) *Group {
	t.Helper()
	l := newLifecycle(t, &GroupConfig{Protocol: "TCP", Port: 80, Attributes: map[string]string{
		AttrCrossZone:                 crossZone,
		AttrDNSFailoverPercentage:     "50",
		AttrRoutingFailoverPercentage: "50",
	}}, named("example"), inZone(zone))
	g := l.g
	var targets []TargetConfig
	for i := 0; i < 20; i++ {
		az := "a"
		if i >= 10 {
			az = "b"
		}
		targets = append(targets, TargetConfig{ID: fmt.Sprintf("10.0.0.%d", i+1), Port: 80, AvailabilityZone: az})
	}
	l.register(targets...)
	// Six targets fail in zone b; every other target is healthy.
	g.lock()
	for _, tg := range g.targets {
		state := StateHealthy
		var n int
		fmt.Sscanf(tg.cfg.ID, "10.0.0.%d", &n)
		if n > 10 && n <= 16 {
			state = StateUnhealthy
		}
		g.setState(tg, state, "", "")
	}
	g.publish()
	g.unlock()
	return g
}

func zoneCount(s *Snapshot, az string) (n int) {
	for _, t := range s.Routable {
		if t.cfg.AvailabilityZone == az {
			n++
		}
	}
	return n
}

// TestSeedZoneExample reproduces the worked example of the NLB seed's
// "Target group health" section.
func TestSeedZoneExample(t *testing.T) {
	t.Run("cross-zone off", func(t *testing.T) {
		a := zoneNode(t, "a", "false")
		// Zone a: 10 healthy targets meet the 50 %; traffic goes to those 10.
		if s, h := a.Snapshot(), a.Health(); len(s.Routable) != 10 || zoneCount(s, "a") != 10 || h.DNSFailover || h.RoutingFailover || h.Healthy != 10 || h.Total != 10 {
			t.Fatalf("node a: routable %d, health %+v", len(s.Routable), h)
		}
		b := zoneNode(t, "b", "false")
		// Zone b: 4 of 10 healthy (40 %): DNS failover marks the zone
		// unhealthy, and routing failover sends traffic to all 10 of its
		// targets, the unhealthy ones included.
		s, h := b.Snapshot(), b.Health()
		if !h.DNSFailover || !h.RoutingFailover || h.Healthy != 4 || h.Total != 10 {
			t.Fatalf("node b health %+v", h)
		}
		if len(s.Routable) != 10 || zoneCount(s, "b") != 10 {
			t.Fatalf("node b routes to %d targets (%d in b), want the 10 of zone b", len(s.Routable), zoneCount(s, "b"))
		}
	})
	t.Run("cross-zone on", func(t *testing.T) {
		for _, zone := range []string{"a", "b"} {
			g := zoneNode(t, zone, "true")
			// 14 of 20 healthy (70 %) meet the 50 %: traffic goes to the 14
			// healthy targets of both zones, no failover.
			s, h := g.Snapshot(), g.Health()
			if len(s.Routable) != 14 || zoneCount(s, "a") != 10 || zoneCount(s, "b") != 4 || h.DNSFailover || h.RoutingFailover || h.Healthy != 14 || h.Total != 20 {
				t.Fatalf("node %s: routable %d (a %d, b %d), health %+v", zone, len(s.Routable), zoneCount(s, "a"), zoneCount(s, "b"), h)
			}
		}
	})
}
