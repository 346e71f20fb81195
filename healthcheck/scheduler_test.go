package healthcheck

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond until it holds, failing the test after a generous
// deadline: correctness never depends on how long anything takes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func newTestScheduler(t *testing.T, maxConcurrent int) *Scheduler {
	t.Helper()
	s := NewScheduler(maxConcurrent)
	s.SetFirstJitter(0)
	t.Cleanup(s.Stop)
	return s
}

func counter(n *atomic.Int64) func(context.Context) {
	return func(context.Context) { n.Add(1) }
}

func TestSchedulerRunsRepeatedly(t *testing.T) {
	s := newTestScheduler(t, 0)
	var a, b atomic.Int64
	s.Upsert("g", "a", 5*time.Millisecond, counter(&a))
	s.Upsert("g", "b", 5*time.Millisecond, counter(&b))
	if s.Len() != 2 {
		t.Fatalf("Len = %d", s.Len())
	}
	s.Start()
	s.Start() // no-op
	waitFor(t, "both jobs to run 5 times", func() bool { return a.Load() >= 5 && b.Load() >= 5 })
}

func TestSchedulerRemove(t *testing.T) {
	s := newTestScheduler(t, 0)
	var removed, clock atomic.Int64
	s.Upsert("g", "removed", time.Millisecond, counter(&removed))
	s.Upsert("g", "clock", time.Millisecond, counter(&clock))
	s.Start()
	waitFor(t, "the job to run", func() bool { return removed.Load() >= 3 })
	s.Remove("removed")
	s.Remove("unknown") // no-op
	if s.Len() != 1 {
		t.Fatalf("Len = %d after Remove", s.Len())
	}
	// One run may have been under way when Remove was called.
	after := removed.Load() + 1
	// The other job keeps time: many of its turns pass with no run of the
	// removed one.
	start := clock.Load()
	waitFor(t, "the clock job to run 20 more times", func() bool { return clock.Load() >= start+20 })
	if n := removed.Load(); n > after {
		t.Fatalf("removed job ran %d times after Remove", n-after+1)
	}
}

func TestSchedulerUpsertKeepsPhase(t *testing.T) {
	s := NewScheduler(0)
	defer s.Stop()
	s.SetFirstJitter(time.Hour)
	var first, second atomic.Int64
	s.Upsert("g", "k", time.Hour, counter(&first))
	next := s.jobs["k"].next
	if wait := time.Until(next); wait < 0 || wait > time.Hour {
		t.Fatalf("first run in %v, want within [0, 1h)", wait)
	}
	s.Upsert("g", "k", time.Hour, counter(&second))
	if got := s.jobs["k"].next; !got.Equal(next) {
		t.Fatalf("Upsert moved the next run from %v to %v", next, got)
	}
	// A longer interval keeps the phase too.
	s.Upsert("g", "k", 2*time.Hour, counter(&second))
	if got := s.jobs["k"].next; !got.Equal(next) {
		t.Fatalf("Upsert moved the next run from %v to %v", next, got)
	}
	// A much shorter interval brings the run forward to one interval away.
	s.Upsert("g", "k", time.Millisecond, counter(&second))
	if got := s.jobs["k"].next; time.Until(got) > time.Millisecond {
		t.Fatalf("next run in %v after shortening the interval", time.Until(got))
	}
	s.Upsert("g", "k", time.Hour, counter(&second))
	if s.Len() != 1 {
		t.Fatalf("Len = %d", s.Len())
	}
	// The replacement function is the one that runs.
	s.RunNow("k")
	s.RunNow("unknown") // no-op
	s.Start()
	waitFor(t, "the replaced job to run", func() bool { return second.Load() == 1 })
	if first.Load() != 0 {
		t.Fatal("the replaced function ran")
	}
}

func TestSchedulerFirstRunWithinJitter(t *testing.T) {
	s := NewScheduler(0)
	defer s.Stop()
	s.SetFirstJitter(time.Minute)
	now := time.Now()
	for _, key := range []string{"a", "b", "c", "d"} {
		s.Upsert("g", key, time.Hour, func(context.Context) {})
	}
	s.Upsert("g", "short", 10*time.Second, func(context.Context) {})
	for key, j := range s.jobs {
		limit := now.Add(time.Minute)
		if key == "short" {
			limit = time.Now().Add(10 * time.Second)
		}
		if j.next.Before(now) || j.next.After(limit) {
			t.Errorf("job %s first runs at +%v, want within the first jitter", key, j.next.Sub(now))
		}
	}
}

func TestSchedulerConcurrencyBound(t *testing.T) {
	const limit = 3
	s := newTestScheduler(t, limit)
	var cur, peak, total atomic.Int64
	var mu sync.Mutex
	inRun := map[string]bool{}
	selfOverlap := false
	for _, key := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		s.Upsert("g", key, time.Millisecond, func(context.Context) {
			mu.Lock()
			if inRun[key] {
				selfOverlap = true
			}
			inRun[key] = true
			mu.Unlock()

			n := cur.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(2 * time.Millisecond) // outlive the interval to force overlap
			cur.Add(-1)

			mu.Lock()
			inRun[key] = false
			mu.Unlock()
			total.Add(1)
		})
	}
	s.Start()
	waitFor(t, "200 runs", func() bool { return total.Load() >= 200 })
	s.Stop()
	if p := peak.Load(); p > limit {
		t.Fatalf("%d runs at once, limit %d", p, limit)
	}
	mu.Lock()
	defer mu.Unlock()
	if selfOverlap {
		t.Fatal("a job ran concurrently with itself")
	}
}

func TestSchedulerStopWaitsAndLeaksNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	s := NewScheduler(4)
	s.SetFirstJitter(0)
	var started, returned atomic.Int64
	for _, key := range []string{"a", "b", "c", "d", "e", "f"} {
		s.Upsert("g", key, time.Millisecond, func(ctx context.Context) {
			started.Add(1)
			<-ctx.Done() // only Stop ends a run
			returned.Add(1)
		})
	}
	s.Start()
	waitFor(t, "4 runs to start", func() bool { return started.Load() >= 4 })
	s.Stop()
	if started.Load() != returned.Load() {
		t.Fatalf("Stop returned with %d runs still running", started.Load()-returned.Load())
	}
	s.Stop() // idempotent
	s.Start()
	s.Upsert("g", "late", time.Millisecond, func(context.Context) { started.Add(1) })
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
	if n := started.Load(); n != returned.Load() {
		t.Fatal("a job ran after Stop")
	}
}

func TestSchedulerStopBeforeStart(t *testing.T) {
	s := NewScheduler(0)
	s.Upsert("g", "a", time.Millisecond, func(context.Context) { t.Error("ran") })
	s.Stop()
	s.Start()
}

func TestSchedulerSurvivesPanics(t *testing.T) {
	s := newTestScheduler(t, 1)
	var panics, runs atomic.Int64
	s.Upsert("g", "panic", time.Millisecond, func(context.Context) {
		panics.Add(1)
		panic("boom")
	})
	s.Upsert("g", "ok", time.Millisecond, counter(&runs))
	s.Start()
	// With a single slot a leaked slot would stall everything.
	waitFor(t, "runs after panics", func() bool { return panics.Load() >= 5 && runs.Load() >= 5 })
}

// peakTracker records how many runs are in progress, and the most seen.
type peakTracker struct{ cur, peak atomic.Int64 }

func (p *peakTracker) enter() {
	n := p.cur.Add(1)
	for {
		m := p.peak.Load()
		if n <= m || p.peak.CompareAndSwap(m, n) {
			return
		}
	}
}

func (p *peakTracker) leave() { p.cur.Add(-1) }

func TestSchedulerGroupAndTotalBounds(t *testing.T) {
	const perGroup, total = 3, 4
	s := NewScheduler(perGroup, WithMaxTotal(total))
	s.SetFirstJitter(0)
	t.Cleanup(s.Stop)
	var all peakTracker
	groups := map[string]*peakTracker{"x": {}, "y": {}}
	var runs atomic.Int64
	for name, g := range groups {
		for i := range 6 {
			s.Upsert(name, name+strconv.Itoa(i), time.Millisecond, func(context.Context) {
				all.enter()
				g.enter()
				time.Sleep(2 * time.Millisecond) // outlive the interval to force overlap
				g.leave()
				all.leave()
				runs.Add(1)
			})
		}
	}
	s.Start()
	waitFor(t, "200 runs", func() bool { return runs.Load() >= 200 })
	s.Stop()
	if p := all.peak.Load(); p > total {
		t.Fatalf("%d runs at once, global limit %d", p, total)
	}
	for name, g := range groups {
		if p := g.peak.Load(); p > perGroup {
			t.Fatalf("group %s ran %d at once, limit %d", name, p, perGroup)
		}
		if g.peak.Load() == 0 {
			t.Fatalf("group %s never ran", name)
		}
	}
}

// TestSchedulerGlobalSlotsRoundRobin: when the global bound is what holds
// groups back, each slot that frees up goes to the next group in line, not
// to whichever group queued the most.
func TestSchedulerGlobalSlotsRoundRobin(t *testing.T) {
	s := NewScheduler(8, WithMaxTotal(1))
	s.SetFirstJitter(0)
	t.Cleanup(s.Stop)
	starts := make(chan string, 16)
	release := make(chan struct{})
	names := []string{"a", "b", "c"}
	for _, name := range names {
		for i := range 4 {
			s.Upsert(name, name+strconv.Itoa(i), time.Hour, func(ctx context.Context) {
				starts <- name
				select {
				case <-release:
				case <-ctx.Done():
				}
			})
		}
	}
	// Every job is due at once: one starts, eleven queue behind the single
	// slot, and each release lets exactly one more start.
	s.Start()
	var order []string
	for range 12 {
		select {
		case g := <-starts:
			order = append(order, g)
		case <-time.After(10 * time.Second):
			t.Fatalf("stalled after %v", order)
		}
		release <- struct{}{}
	}
	// After the first start, three full rounds in which every group has a
	// backlog: every three consecutive starts are one of each group.
	for i := 1; i+3 <= 10; i += 3 {
		round := map[string]bool{order[i]: true, order[i+1]: true, order[i+2]: true}
		if len(round) != len(names) {
			t.Fatalf("start order %v: starts %d-%d are not one per group", order, i+1, i+3)
		}
	}
}

// TestSchedulerBacklog: a due job of a group at its bound waits in the
// group's backlog, once however many turns pass, while other groups run;
// a queued job that is removed never runs, and one moved to another group
// runs there at once.
func TestSchedulerBacklog(t *testing.T) {
	s := newTestScheduler(t, 1)
	release := make(chan struct{})
	var blocker, waiter, other, removed, moved atomic.Int64
	s.Upsert("g", "blocker", time.Hour, func(ctx context.Context) {
		blocker.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
	})
	s.Start()
	waitFor(t, "the blocker to hold the group's slot", func() bool { return blocker.Load() == 1 })
	s.Upsert("g", "waiter", time.Millisecond, counter(&waiter))
	s.Upsert("g", "removed", time.Millisecond, counter(&removed))
	s.Upsert("g", "moved", time.Millisecond, counter(&moved))
	s.Upsert("h", "other", time.Millisecond, counter(&other))

	backlogged := func(key string) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		j := s.jobs[key]
		// Queued, and many of its 1ms turns have passed since.
		return j.state == queued && time.Since(j.due) > 20*time.Millisecond
	}
	waitFor(t, "the jobs to wait in the backlog", func() bool {
		return backlogged("waiter") && backlogged("removed") && backlogged("moved")
	})
	waitFor(t, "another group to run meanwhile", func() bool { return other.Load() >= 20 })
	s.mu.Lock()
	if n := s.groups["g"].backlog.len; n != 3 {
		s.mu.Unlock()
		t.Fatalf("backlog holds %d entries for 3 jobs", n)
	}
	s.mu.Unlock()

	s.Remove("removed")
	s.Upsert("h", "moved", time.Millisecond, counter(&moved))
	waitFor(t, "the moved job to run in its new group", func() bool { return moved.Load() >= 1 })
	s.mu.Lock()
	if n := s.groups["g"].backlog.len; n != 1 {
		s.mu.Unlock()
		t.Fatalf("backlog holds %d entries after Remove and a move, want 1", n)
	}
	s.mu.Unlock()
	if n := waiter.Load(); n != 0 {
		t.Fatalf("the waiter ran %d times while its group's slot was busy", n)
	}

	close(release)
	waitFor(t, "the waiter to run once the slot frees", func() bool { return waiter.Load() >= 5 })
	if n := removed.Load(); n != 0 {
		t.Fatalf("a job removed from the backlog ran %d times", n)
	}

	// A group with no job and no run left is forgotten.
	s.Remove("blocker")
	s.Remove("waiter")
	waitFor(t, "the empty group to be dropped", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		_, ok := s.groups["g"]
		return !ok
	})
}

func boom() { panic("boom") }

func TestSchedulerPanicHandler(t *testing.T) {
	s := newTestScheduler(t, 0)
	type report struct {
		key       string
		recovered any
		stack     string
	}
	reports := make(chan report, 16)
	s.SetPanicHandler(func(key string, recovered any, stack []byte) {
		select {
		case reports <- report{key, recovered, string(stack)}:
		default:
		}
	})
	var panics, runs atomic.Int64
	s.Upsert("g", "bad", time.Millisecond, func(context.Context) {
		panics.Add(1)
		boom()
	})
	s.Start()
	select {
	case r := <-reports:
		if r.key != "bad" || r.recovered != "boom" {
			t.Fatalf("handler got key %q, value %v", r.key, r.recovered)
		}
		// The stack is the panicking run's, not the handler's caller's.
		if !strings.Contains(r.stack, "healthcheck.boom") {
			t.Fatalf("stack does not show the panic site:\n%s", r.stack)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the panic handler was not called")
	}

	// A handler that panics itself takes nothing down either.
	s.SetPanicHandler(func(string, any, []byte) { panic("handler") })
	s.Upsert("g", "ok", time.Millisecond, counter(&runs))
	start := panics.Load()
	waitFor(t, "runs beside a panicking handler", func() bool {
		return panics.Load() >= start+5 && runs.Load() >= 5
	})
}

func TestJitterBounds(t *testing.T) {
	for range 1000 {
		if j := jitter(10 * time.Second); j < -time.Second || j >= time.Second {
			t.Fatalf("jitter %v outside ±10%%", j)
		}
	}
	if randDuration(0) != 0 || randDuration(-1) != 0 {
		t.Fatal("randDuration of a non-positive bound")
	}
}
