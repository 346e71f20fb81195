package healthcheck

import (
	"context"
	"runtime"
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
	s.Upsert("a", 5*time.Millisecond, counter(&a))
	s.Upsert("b", 5*time.Millisecond, counter(&b))
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
	s.Upsert("removed", time.Millisecond, counter(&removed))
	s.Upsert("clock", time.Millisecond, counter(&clock))
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
	s.Upsert("k", time.Hour, counter(&first))
	next := s.jobs["k"].next
	if wait := time.Until(next); wait < 0 || wait > time.Hour {
		t.Fatalf("first run in %v, want within [0, 1h)", wait)
	}
	s.Upsert("k", time.Hour, counter(&second))
	if got := s.jobs["k"].next; !got.Equal(next) {
		t.Fatalf("Upsert moved the next run from %v to %v", next, got)
	}
	// A longer interval keeps the phase too.
	s.Upsert("k", 2*time.Hour, counter(&second))
	if got := s.jobs["k"].next; !got.Equal(next) {
		t.Fatalf("Upsert moved the next run from %v to %v", next, got)
	}
	// A much shorter interval brings the run forward to one interval away.
	s.Upsert("k", time.Millisecond, counter(&second))
	if got := s.jobs["k"].next; time.Until(got) > time.Millisecond {
		t.Fatalf("next run in %v after shortening the interval", time.Until(got))
	}
	s.Upsert("k", time.Hour, counter(&second))
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
		s.Upsert(key, time.Hour, func(context.Context) {})
	}
	s.Upsert("short", 10*time.Second, func(context.Context) {})
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
		s.Upsert(key, time.Millisecond, func(context.Context) {
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
		s.Upsert(key, time.Millisecond, func(ctx context.Context) {
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
	s.Upsert("late", time.Millisecond, func(context.Context) { started.Add(1) })
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
	if n := started.Load(); n != returned.Load() {
		t.Fatal("a job ran after Stop")
	}
}

func TestSchedulerStopBeforeStart(t *testing.T) {
	s := NewScheduler(0)
	s.Upsert("a", time.Millisecond, func(context.Context) { t.Error("ran") })
	s.Stop()
	s.Start()
}

func TestSchedulerSurvivesPanics(t *testing.T) {
	s := newTestScheduler(t, 1)
	var panics, runs atomic.Int64
	s.Upsert("panic", time.Millisecond, func(context.Context) {
		panics.Add(1)
		panic("boom")
	})
	s.Upsert("ok", time.Millisecond, counter(&runs))
	s.Start()
	// With a single slot a leaked slot would stall everything.
	waitFor(t, "runs after panics", func() bool { return panics.Load() >= 5 && runs.Load() >= 5 })
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
