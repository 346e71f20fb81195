package targetgroup

import (
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// closeLog records which flows were closed, in order.
type closeLog struct {
	mu     sync.Mutex
	closed []string
}

// namedFlow stands for the layer4 handler's flow: closing it ends it
// (Done), as the handler's relays do when their sockets close.
type namedFlow struct {
	name   string
	log    *closeLog
	n      atomic.Int32
	flow   atomic.Pointer[Flow]
	closed atomic.Bool
}

func (f *namedFlow) Close() error {
	f.n.Add(1)
	f.log.mu.Lock()
	f.log.closed = append(f.log.closed, f.name)
	f.log.mu.Unlock()
	f.closed.Store(true)
	if fl := f.flow.Load(); fl != nil {
		fl.Done()
	}
	return nil
}

// admit admits a namedFlow; one closed before AdmitFlow returned (by a
// concurrent admission) ends here.
func admit(g *Group, name string, log *closeLog) *Flow {
	nf := &namedFlow{name: name, log: log}
	return admitNamed(g, nf)
}

func admitNamed(g *Group, nf *namedFlow) *Flow {
	fl := g.AdmitFlow(nf)
	nf.flow.Store(fl)
	if nf.closed.Load() {
		fl.Done()
	}
	return fl
}

func (l *closeLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.closed
	l.closed = nil
	return out
}

func setFlowCap(r *Registry, n int) {
	l := r.Limits()
	l.MaxUDPFlowsPerGroup = n
	r.limits.Store(&l)
}

// tick waits until the flows' clock has moved on, so that what happens
// next is strictly later than what happened before, even on a coarse clock.
func tick() {
	for t := flowNow(); flowNow() == t; {
	}
}

func TestFlowsEvictLeastRecentlyActive(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Protocol: ProtocolUDP, Port: 53})
	g := l.g
	setFlowCap(l.reg, 3)
	var log closeLog
	flows := map[string]*Flow{}
	add := func(name string) {
		tick()
		flows[name] = admit(g, name, &log)
	}
	add("a")
	add("b")
	add("c")
	if got := log.take(); len(got) != 0 || g.UDPFlows() != 3 {
		t.Fatalf("at the cap: closed %v, %d live", got, g.UDPFlows())
	}
	tick()
	flows["a"].Touch() // a is now more recent than b and c
	add("d")
	if got := log.take(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("closed %v, want [b], the least recently active", got)
	}
	tick()
	flows["c"].Touch()
	tick()
	flows["a"].Touch()
	add("e") // d is the least recent now
	add("f") // then c
	if got := log.take(); !slices.Equal(got, []string{"d", "c"}) {
		t.Fatalf("closed %v, want [d c]", got)
	}
	if g.UDPFlows() != 3 {
		t.Fatalf("%d live flows, cap 3", g.UDPFlows())
	}
}

func TestFlowsCapChanges(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Protocol: ProtocolUDP, Port: 53})
	g := l.g
	setFlowCap(l.reg, 5)
	var log closeLog
	for i := range 5 {
		tick()
		admit(g, strconv.Itoa(i), &log)
	}
	// A reload lowers the cap: the next admission closes the oldest
	// flows until the new one fits.
	setFlowCap(l.reg, 2)
	tick()
	admit(g, "new", &log)
	if got := log.take(); !slices.Equal(got, []string{"0", "1", "2", "3"}) || g.UDPFlows() != 2 {
		t.Fatalf("cap lowered to 2: closed %v, %d live", got, g.UDPFlows())
	}
	// Raised again: room for more, nothing closed.
	setFlowCap(l.reg, 4)
	admit(g, "x", &log)
	admit(g, "y", &log)
	if got := log.take(); len(got) != 0 || g.UDPFlows() != 4 {
		t.Fatalf("cap raised to 4: closed %v, %d live", got, g.UDPFlows())
	}
}

func TestFlowsDone(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Protocol: ProtocolUDP, Port: 53})
	g := l.g
	setFlowCap(l.reg, 2)
	var log closeLog
	a := admit(g, "a", &log)
	tick()
	b := admit(g, "b", &log)
	a.Done()
	a.Done() // idempotent
	if g.UDPFlows() != 1 {
		t.Fatalf("%d live flows after one ended, want 1", g.UDPFlows())
	}
	tick()
	c := admit(g, "c", &log)
	if got := log.take(); len(got) != 0 {
		t.Fatalf("a flow that ended left room, yet %v was closed", got)
	}
	tick()
	admit(g, "d", &log).Done()
	if got := log.take(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("closed %v, want [b]", got)
	}
	b.Done() // evicted and ended already: changes nothing
	if g.UDPFlows() != 1 {
		t.Fatalf("%d live flows, want 1 (c)", g.UDPFlows())
	}
	c.Done()
	if g.UDPFlows() != 0 {
		t.Fatalf("%d live flows, want 0", g.UDPFlows())
	}
	// The emptied table takes new flows.
	e := admit(g, "e", &log)
	if g.UDPFlows() != 1 {
		t.Fatalf("%d live flows, want 1", g.UDPFlows())
	}
	e.Done()
}

// TestFlowsConcurrent admits, touches and ends flows from many goroutines
// at once (run with -race): the cap holds and no flow is closed twice.
func TestFlowsConcurrent(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Protocol: ProtocolUDP, Port: 53})
	g := l.g
	const limit = 50
	setFlowCap(l.reg, limit)
	var log closeLog
	var all sync.Map
	var over atomic.Int32
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				nf := &namedFlow{name: strconv.Itoa(w*1000 + i), log: &log}
				all.Store(nf, true)
				f := admitNamed(g, nf)
				if g.UDPFlows() > limit {
					over.Add(1)
				}
				for range 3 {
					f.Touch()
				}
				if i%3 == 0 {
					f.Done()
				}
			}
		}()
	}
	wg.Wait()
	if over.Load() > 0 || g.UDPFlows() > limit {
		t.Fatalf("live flows over the cap %d times (now %d)", over.Load(), g.UDPFlows())
	}
	all.Range(func(k, _ any) bool {
		if n := k.(*namedFlow).n.Load(); n > 1 {
			t.Errorf("flow %s closed %d times", k.(*namedFlow).name, n)
		}
		return true
	})
}

// slowFlow ends a while after it is closed, from another goroutine, as the
// layer4 handler's flows do.
type slowFlow struct {
	flow  atomic.Pointer[Flow]
	ended atomic.Bool
}

func (f *slowFlow) Close() error {
	go func() {
		for range 100 {
			runtime.Gosched()
		}
		f.ended.Store(true)
		f.flow.Load().Done()
	}()
	return nil
}

// TestFlowsAdmissionWaitsForEvicted: the new flow is admitted (and so
// dialed) only once the flow it replaces has ended, so that the group's
// sockets and in_flight never exceed the cap.
func TestFlowsAdmissionWaitsForEvicted(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Protocol: ProtocolUDP, Port: 53})
	g := l.g
	setFlowCap(l.reg, 1)
	old := &slowFlow{}
	old.flow.Store(g.AdmitFlow(old))
	g.AdmitFlow(&slowFlow{}).Done()
	if !old.ended.Load() {
		t.Fatal("AdmitFlow returned before the flow it closed ended")
	}
}

func TestFlowsLimitField(t *testing.T) {
	if got := (Limits{}).withDefaults().MaxUDPFlowsPerGroup; got != 10000 {
		t.Fatalf("default max_udp_flows_per_group %d, want 10000", got)
	}
	for _, n := range []int{-1, 1000001} {
		err := Limits{MaxUDPFlowsPerGroup: n}.withDefaults().validate()
		if err == nil || !IsValidationError(err) || !strings.Contains(err.Error(), "max_udp_flows_per_group") || !strings.Contains(err.Error(), "1-1000000") {
			t.Errorf("max_udp_flows_per_group %d: %v, want a validation error naming the field and 1-1000000", n, err)
		}
	}
	for _, n := range []int{1, 1000000} {
		if err := (Limits{MaxUDPFlowsPerGroup: n}).withDefaults().validate(); err != nil {
			t.Errorf("max_udp_flows_per_group %d: %v", n, err)
		}
	}
}
