package targetgroup

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-targetgroup/caddy-targetgroup/healthcheck"
)

// fakeClock moves only when a test advances it: drain timers, the
// scheduler and the registry's background loops then fire, in order, on
// the advancing goroutine.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at    time.Time
	f     func()
	armed bool
	clock *fakeClock
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) healthcheck.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f, armed: true, clock: c}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := t.armed
	t.armed = false
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := t.armed
	t.at, t.armed = t.clock.now.Add(d), true
	return was
}

// Advance moves time forward and runs the timers that fall due, in order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	for _, t := range c.timers {
		if t.armed && !t.at.After(c.now) {
			t.armed = false
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.f()
	}
}

// armedAt reports whether a timer is set to fire at at.
func (c *fakeClock) armedAt(at time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.timers {
		if t.armed && t.at.Equal(at) {
			return true
		}
	}
	return false
}

// lifecycle is the package's one test fixture: a registry on a fake clock,
// holding one group ("web" unless named otherwise) and recording the
// events it emits. Nothing in it runs by itself: targets are checked by
// l.check (a result) or runHealthRound (a real probe), and timers fire when
// the test advances the clock.
type lifecycle struct {
	t      *testing.T
	clock  *fakeClock
	reg    *Registry
	g      *Group
	mu     sync.Mutex
	events []string
}

type fixtureOption func(*fixtureSettings)

type fixtureSettings struct{ name, zone string }

// named names the fixture's group.
func named(name string) fixtureOption { return func(s *fixtureSettings) { s.name = name } }

// inZone makes the registry a node of that availability zone.
func inZone(zone string) fixtureOption { return func(s *fixtureSettings) { s.zone = zone } }

func newLifecycle(t *testing.T, c *GroupConfig, opts ...fixtureOption) *lifecycle {
	t.Helper()
	set := fixtureSettings{name: "web"}
	for _, o := range opts {
		o(&set)
	}
	l := &lifecycle{t: t, clock: newTestClock()}
	l.reg = newRegistryOn(zap.NewNop(), l.clock)
	l.reg.zone.Store(&set.zone)
	l.reg.observe = func(name string, data map[string]any) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if name == "target_state_changed" {
			name += ":" + data["old"].(string) + "->" + data["new"].(string)
		}
		l.events = append(l.events, name)
	}
	t.Cleanup(func() { _ = l.reg.Destruct() })
	l.g = newGroup(l.reg, set.name, mustSpec(t, c), SourceAPI)
	m := map[string]*Group{set.name: l.g}
	l.reg.groups.Store(&m)
	return l
}

// target is the fixture's target 127.0.0.1:port.
func (l *lifecycle) target(port int) *Target {
	l.g.mu.Lock()
	defer l.g.mu.Unlock()
	return l.g.targets[TargetKey{"127.0.0.1", port}]
}

// state is the state and reason DescribeTargetHealth gives for port.
func (l *lifecycle) state(port int) (State, string) {
	l.t.Helper()
	d := l.g.DescribeTargetHealth(TargetKey{"127.0.0.1", port})[0].TargetHealth
	return d.State, d.Reason
}

func (l *lifecycle) expect(port int, state State, reason string) {
	l.t.Helper()
	if s, r := l.state(port); s != state || r != reason {
		l.t.Fatalf("target %d is %s (%s), want %s (%s)", port, s, r, state, reason)
	}
}

// check applies one health check result to port, as a real check would:
// a pass, or a failure with a code mismatch.
func (l *lifecycle) check(port int, pass bool) {
	res := healthcheck.Result{Healthy: pass}
	if !pass {
		res.Reason, res.Description = ReasonResponseCodeMismatch, "Health checks failed with these codes: [503]"
	}
	l.g.observe(l.target(port), l.g.Spec(), res, l.target(port).ip, nil)
}

// hasEvent reports whether the registry emitted the event;
// target_state_changed events are named with their transition
// ("target_state_changed:initial->healthy").
func (l *lifecycle) hasEvent(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e == name {
			return true
		}
	}
	return false
}

// register registers targets into the fixture's group, failing the test
// if that is refused.
func (l *lifecycle) register(ts ...TargetConfig) {
	l.t.Helper()
	mustRegister(l.t, l.reg, l.g.name, ts)
}

// deregister deregisters targets from the fixture's group, failing the
// test if that is refused.
func (l *lifecycle) deregister(ts ...TargetConfig) {
	l.t.Helper()
	if err := l.reg.DeregisterTargets(l.g.name, ts); err != nil {
		l.t.Fatalf("deregistering from %s: %v", l.g.name, err)
	}
}

// runHealthRound checks every target of g once, with the registry's real
// prober, and returns when every check has been applied: one turn of the
// scheduler, without the scheduler (as Caddy's own tests run one active
// health check round). Targets are checked at once, as the scheduler's
// slots would.
func runHealthRound(g *Group) {
	g.lock()
	ts := append([]*Target(nil), g.sortedTargets()...)
	g.unlock()
	var wg sync.WaitGroup
	for _, t := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.check(context.Background(), t)
		}()
	}
	wg.Wait()
}
