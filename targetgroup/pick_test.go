package targetgroup

import (
	"strconv"
	"testing"
)

// pickGroup is a group of n healthy targets on ports 1..n.
func pickGroup(t *testing.T, c *GroupConfig, n int) *Group {
	t.Helper()
	l := newLifecycle(t, c)
	cfgs := make([]TargetConfig, n)
	states := map[int]State{}
	for i := range cfgs {
		cfgs[i] = TargetConfig{ID: "127.0.0.1", Port: i + 1}
		states[i+1] = StateHealthy
	}
	l.register(cfgs...)
	force(l.g, states)
	return l.g
}

func TestPickRoundRobinCursorOutlivesSnapshots(t *testing.T) {
	g := pickGroup(t, &GroupConfig{}, 3)
	var got []int
	for k := 0; k < 6; k++ {
		if k == 3 {
			force(g, map[int]State{}) // a new snapshot, the same cursor
		}
		got = append(got, g.Snapshot().Routable[g.Snapshot().Pick(PickRequest{})].cfg.Port)
	}
	want := []int{1, 2, 3, 1, 2, 3}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("picks %v, want %v", got, want)
		}
	}
}

func TestPickPinnedTarget(t *testing.T) {
	g := pickGroup(t, &GroupConfig{Attributes: map[string]string{AttrStickinessEnabled: "true"}}, 3)
	s := g.Snapshot()
	if st := s.Stickiness(); st.Type != StickinessLBCookie || st.Cookie != "AWSALB" || !st.CORS {
		t.Fatalf("stickiness %+v", st)
	}
	pinned := TargetKey{ID: "127.0.0.1", Port: 2}
	for range 5 {
		if i := s.Pick(PickRequest{Pinned: pinned}); s.Routable[i].Key() != pinned {
			t.Fatalf("picked %v, want the pinned %v", s.Routable[i].Key(), pinned)
		}
	}
	// Not acceptable for this try: the algorithm picks another one.
	ok := func(i int) bool { return s.Routable[i].Key() != pinned }
	if i := s.Pick(PickRequest{Pinned: pinned, OK: ok}); i < 0 || s.Routable[i].Key() == pinned {
		t.Fatalf("picked %d despite OK", i)
	}
	// Among a reverse_proxy pool in another order, with an entry that is
	// no target: the index is the pool's.
	among := []*Target{nil, s.Routable[2], s.Routable[1]}
	if i := s.Pick(PickRequest{Among: among, Pinned: pinned}); i != 2 {
		t.Fatalf("pinned among a pool: %d, want 2", i)
	}
	// A target routed to by fail-open only is not honoured.
	force(g, map[int]State{1: StateUnhealthy, 2: StateUnhealthy, 3: StateUnhealthy})
	s = g.Snapshot()
	if !s.FailOpen {
		t.Fatal("not failing open")
	}
	counts := map[TargetKey]int{}
	for range 30 {
		counts[s.Routable[s.Pick(PickRequest{Pinned: pinned})].Key()]++
	}
	if counts[pinned] != 10 {
		t.Fatalf("an unhealthy pinned target still pins: %v", counts)
	}
}

func TestPickSourceIP(t *testing.T) {
	g := pickGroup(t, &GroupConfig{Protocol: ProtocolTCP, Port: 1, Attributes: map[string]string{AttrStickinessEnabled: "true", AttrStickinessType: StickinessSourceIP}}, 10)
	s := g.Snapshot()
	seen := map[int]bool{}
	for c := range 50 {
		ip := "10.0.0." + strconv.Itoa(c)
		i := s.Pick(PickRequest{ClientIP: ip})
		if j := s.Pick(PickRequest{ClientIP: ip}); i < 0 || j != i {
			t.Fatalf("client %s: %d then %d", ip, i, j)
		}
		seen[i] = true
		// Its target out of the question: another one, stable too.
		ok := func(k int) bool { return k != i }
		if k := s.Pick(PickRequest{ClientIP: ip, OK: ok}); k < 0 || k == i || s.Pick(PickRequest{ClientIP: ip, OK: ok}) != k {
			t.Fatalf("client %s without its target: %d", ip, k)
		}
	}
	if len(seen) < 5 {
		t.Fatalf("50 clients on %d of 10 targets", len(seen))
	}
}

func TestNarrow(t *testing.T) {
	small := pickGroup(t, &GroupConfig{}, 8).Snapshot()
	if first, n := small.Narrow(8, PickRequest{}); first != 0 || n != 8 || small.Narrowed(n) {
		t.Fatalf("8 targets narrowed to %d from %d", n, first)
	}
	large := pickGroup(t, &GroupConfig{}, 20).Snapshot()
	counts := map[int]int{}
	for range 40 {
		first, n := large.Narrow(8, PickRequest{})
		if n != 8 || !large.Narrowed(n) {
			t.Fatalf("20 targets narrowed to %d", n)
		}
		counts[first]++
	}
	for i := range 20 {
		if counts[i] != 2 {
			t.Fatalf("the narrowed pools start round robin over all 20 targets: %v", counts)
		}
	}
	// Nothing acceptable: the pool starts at the first target.
	if first, n := large.Narrow(8, PickRequest{OK: func(int) bool { return false }}); first != 0 || n != 8 {
		t.Fatalf("nothing acceptable: %d, %d", first, n)
	}
}
