package targetgroup

import (
	"slices"
	"strconv"
	"sync"
	"testing"
)

func ports(ts []*Target) []int {
	out := make([]int, len(ts))
	for i, t := range ts {
		out[i] = t.cfg.Port
	}
	return out
}

// force sets target states directly, as the health checker would.
func force(g *Group, states map[int]State) {
	g.lock()
	defer g.unlock()
	for _, t := range g.targets {
		if s, ok := states[t.cfg.Port]; ok {
			g.setState(t, s, "", "")
		}
	}
	g.publish()
}

func TestSnapshotRoutesHealthyOnly(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	g := l.g
	l.register(local(1, 2, 3)...)
	if s := g.Snapshot(); len(s.Routable) != 0 || s.Initial != 3 {
		t.Fatalf("initial targets are routable: %v (initial %d)", ports(s.Routable), s.Initial)
	}
	force(g, map[int]State{1: StateHealthy, 2: StateHealthy, 3: StateUnhealthy})
	s := g.Snapshot()
	if got := ports(s.Routable); len(got) != 2 || got[0] != 1 || got[1] != 2 || s.FailOpen {
		t.Fatalf("routable %v failopen %v, want [1 2] false", got, s.FailOpen)
	}
	if s.ByDial("127.0.0.1:1") == nil || s.ByDial("127.0.0.1:3") != nil {
		t.Fatal("ByDial does not match Routable")
	}
}

func TestSnapshotFailsOpen(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	g := l.g
	l.register(local(1, 2, 3)...)
	// No healthy target: route to every checked target; initial ones stay out.
	force(g, map[int]State{1: StateUnhealthy, 2: StateUnhealthy})
	s := g.Snapshot()
	if got := ports(s.Routable); !s.FailOpen || len(got) != 2 {
		t.Fatalf("zero healthy: routable %v failopen %v", got, s.FailOpen)
	}
	if h := g.Health(); !h.RoutingFailover || h.Healthy != 0 || h.Total != 3 {
		t.Fatalf("health %+v", h)
	}

	// Percentage threshold: 1 healthy of 3 is below 50%.
	l2 := newLifecycle(t, &GroupConfig{Attributes: map[string]string{AttrRoutingFailoverPercentage: "50"}})
	g2 := l2.g
	l2.register(local(1, 2, 3)...)
	force(g2, map[int]State{1: StateHealthy, 2: StateUnhealthy, 3: StateUnhealthy})
	if s := g2.Snapshot(); !s.FailOpen || len(s.Routable) != 3 {
		t.Fatalf("below 50%%: routable %v failopen %v", ports(s.Routable), s.FailOpen)
	}
	force(g2, map[int]State{2: StateHealthy})
	if s := g2.Snapshot(); s.FailOpen || len(s.Routable) != 2 {
		t.Fatalf("at 66%%: routable %v failopen %v", ports(s.Routable), s.FailOpen)
	}
}

func TestDeregisterDrains(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	g := l.g
	l.register(local(1, 2)...)
	force(g, map[int]State{1: StateHealthy, 2: StateHealthy})
	t1 := g.Snapshot().Routable[0]
	lease := t1.Acquire()
	l.deregister(local(1)...)
	s := g.Snapshot()
	if got := ports(s.Routable); len(got) != 1 || got[0] != 2 || s.Draining != 1 {
		t.Fatalf("after deregistration routable %v draining %d", got, s.Draining)
	}
	if d := g.DescribeTargetHealth()[0]; d.TargetHealth.State != StateDraining || d.TargetHealth.Reason != ReasonDeregistrationInProgress || d.InFlight != 1 {
		t.Fatalf("draining target described as %+v", d)
	}
	lease.Release()
	lease.Release() // idempotent
	if n := t1.InFlight(); n != 0 {
		t.Fatalf("in flight %d after release", n)
	}
	// Re-registering a draining target brings it back through initial checks.
	l.register(local(1)...)
	if d := g.DescribeTargetHealth()[0]; d.TargetHealth.State != StateInitial {
		t.Fatalf("re-registered target is %s", d.TargetHealth.State)
	}
}

func TestZeroDelayDeregistrationCompletes(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Attributes: map[string]string{AttrDeregistrationDelay: "0"}})
	l.register(local(1)...)
	l.deregister(local(1)...)
	// The zero delay is due at once; the target leaves the group.
	l.clock.Advance(0)
	if d := l.g.DescribeTargetHealth(); len(d) != 0 {
		t.Fatalf("target still described: %+v", d)
	}
}

func TestBatchIsAllOrNothing(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	_, err := l.reg.RegisterTargets("web", []TargetConfig{{ID: "127.0.0.1", Port: 1}, {ID: "8.8.8.8", Port: 2}})
	if err == nil || len(l.g.DescribeTargetHealth()) != 0 {
		t.Fatalf("err %v, targets %d", err, len(l.g.DescribeTargetHealth()))
	}
	if _, err := l.reg.RegisterTargets("nope", []TargetConfig{{ID: "127.0.0.1"}}); err == nil {
		t.Fatal("unknown group accepted")
	}
}

func TestLeasesAreExactUnderConcurrency(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	l.register(local(1)...)
	force(l.g, map[int]State{1: StateHealthy})
	tg := l.g.Snapshot().Routable[0]
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				l := tg.Acquire()
				l.Release()
			}
		}()
	}
	wg.Wait()
	if n := tg.InFlight(); n != 0 {
		t.Fatalf("in flight %d, want 0", n)
	}
}

// The group keeps its (id, port) order across registrations in several
// batches, in any order, and removals.
func TestTargetOrderAcrossBatchesAndRemovals(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Attributes: map[string]string{AttrDeregistrationDelay: "0"}})
	g := l.g
	batches := [][]TargetConfig{
		{{ID: "127.0.0.2", Port: 80}, {ID: "127.0.0.1", Port: 90}},
		{{ID: "127.0.0.1", Port: 80}, {ID: "127.0.0.3", Port: 1}, {ID: "127.0.0.10", Port: 5}},
		{{ID: "127.0.0.2", Port: 8}},
	}
	for _, b := range batches {
		l.register(b...)
	}
	order := func() []string {
		var out []string
		for _, d := range g.DescribeTargetHealth() {
			out = append(out, d.Target.ID+":"+strconv.Itoa(d.Target.Port))
		}
		return out
	}
	want := []string{"127.0.0.1:80", "127.0.0.1:90", "127.0.0.10:5", "127.0.0.2:8", "127.0.0.2:80", "127.0.0.3:1"}
	if got := order(); !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	// Asking for some targets leaves the group's order alone.
	g.DescribeTargetHealth(TargetKey{ID: "127.0.0.3", Port: 1}, TargetKey{ID: "127.0.0.1", Port: 80})
	l.deregister(TargetConfig{ID: "127.0.0.10", Port: 5})
	l.clock.Advance(0) // the zero delay ends: the target leaves
	want = slices.DeleteFunc(want, func(s string) bool { return s == "127.0.0.10:5" })
	if got := order(); !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	l.register(TargetConfig{ID: "127.0.0.0", Port: 1})
	if got := order(); !slices.Equal(got, append([]string{"127.0.0.0:1"}, want...)) {
		t.Fatalf("after another registration: %v", got)
	}
}
