package healthcheck

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// manualClock moves only when a test advances it, and fires the timers
// that fall due then, in order, on the advancing goroutine.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	c     *manualClock
	at    time.Time
	f     func()
	armed bool
}

func newManualClock() *manualClock {
	return &manualClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{c: c, f: f}
	c.timers = append(c.timers, t)
	t.arm(d)
	return t
}

// arm is called with c.mu held.
func (t *manualTimer) arm(d time.Duration) { t.at, t.armed = t.c.now.Add(d), true }

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.armed
	t.armed = false
	return was
}

func (t *manualTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.armed
	t.arm(d)
	return was
}

// Advance moves the clock by d and fires the timers due by then.
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*manualTimer
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

// next is the earliest time a timer is armed for, if any is.
func (c *manualClock) next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var at time.Time
	found := false
	for _, t := range c.timers {
		if t.armed && (!found || t.at.Before(at)) {
			at, found = t.at, true
		}
	}
	return at, found
}

// waitArmed waits until the scheduler's loop has armed its timer for at:
// only then has it taken in everything due before, so that advancing the
// clock to at is seen.
func (c *manualClock) waitArmed(t *testing.T, at time.Time) {
	t.Helper()
	waitFor(t, "the scheduler to wait for "+at.Format(time.StampMicro), func() bool {
		next, ok := c.next()
		return ok && next.Equal(at)
	})
}

// clockedScheduler is a started scheduler on a manual clock, with no first
// jitter.
func clockedScheduler(t *testing.T, maxPerGroup int) (*Scheduler, *manualClock) {
	t.Helper()
	c := newManualClock()
	s := NewScheduler(maxPerGroup, WithClock(c))
	s.SetFirstJitter(0)
	t.Cleanup(s.Stop)
	return s, c
}

// nextRun is when key is due next, and its nominal (jitter-free) time.
func (s *Scheduler) nextRun(key string) (next, phase time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[key]
	return j.next, j.phase
}

// lastDue is when the latest turn of key that was started or queued was
// due: it moves only when a run is admitted, however long the run takes to
// report itself.
func (s *Scheduler) lastDue(key string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobs[key].due
}

// waitIdle waits until no run of key is in progress: a turn that falls due
// before is skipped, as it should be.
func (s *Scheduler) waitIdle(t *testing.T, key string) {
	t.Helper()
	waitFor(t, "the run of "+key+" to end", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.jobs[key].state == idle
	})
}

// waitPast waits until the scheduler has taken in key's turn due at due
// and moved it on: the only sign of a turn that is skipped.
func (s *Scheduler) waitPast(t *testing.T, key string, due time.Time) {
	t.Helper()
	waitFor(t, "the turn of "+key+" to move on", func() bool {
		next, _ := s.nextRun(key)
		return next.After(due)
	})
}

// recordRuns is a job that sends the clock's time at each of its runs.
func recordRuns(c *manualClock, runs chan<- time.Time) func(context.Context) {
	return func(context.Context) { runs <- c.Now() }
}

func receive(t *testing.T, what string, ch <-chan time.Time) time.Time {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return time.Time{}
	}
}

// TestSchedulerCadenceKeepsItsPhase: every turn runs within ±10% of its
// nominal time, and the nominal times are exactly one interval apart, turn
// after turn: jitter spreads the checks without accumulating.
func TestSchedulerCadenceKeepsItsPhase(t *testing.T) {
	const interval = 10 * time.Second
	s, c := clockedScheduler(t, 0)
	runs := make(chan time.Time, 1)
	s.Upsert("g", "k", interval, recordRuns(c, runs))
	start := c.Now()
	s.Start()
	if at := receive(t, "the first run", runs); !at.Equal(start) {
		t.Fatalf("first run at +%v, want at once without first jitter", at.Sub(start))
	}
	for turn := 1; turn <= 300; turn++ {
		next, phase := s.nextRun("k")
		if want := start.Add(time.Duration(turn) * interval); !phase.Equal(want) {
			t.Fatalf("turn %d: nominal time +%v, want +%v", turn, phase.Sub(start), want.Sub(start))
		}
		if off := next.Sub(phase); off < -interval/10 || off >= interval/10 {
			t.Fatalf("turn %d: jitter %v outside ±10%% of %v", turn, off, interval)
		}
		s.waitIdle(t, "k")
		c.waitArmed(t, next)
		c.Advance(next.Sub(c.Now()))
		if at := receive(t, "a run", runs); !at.Equal(next) {
			t.Fatalf("turn %d ran at +%v, due at +%v", turn, at.Sub(start), next.Sub(start))
		}
	}
}

// TestSchedulerStallRestartsCadence: a job more than an interval behind
// (the process was stopped, its group saturated) runs once and takes up its
// cadence from there; the turns it missed are not made up.
func TestSchedulerStallRestartsCadence(t *testing.T) {
	const interval = 10 * time.Second
	s, c := clockedScheduler(t, 0)
	runs := make(chan time.Time, 16)
	s.Upsert("g", "k", interval, recordRuns(c, runs))
	start := c.Now()
	s.Start()
	receive(t, "the first run", runs)
	s.waitIdle(t, "k")
	missed, _ := s.nextRun("k")
	c.waitArmed(t, missed)
	c.Advance(10 * interval)
	stalled := receive(t, "the run after the stall", runs)
	if !stalled.Equal(start.Add(10 * interval)) {
		t.Fatalf("run after the stall at +%v", stalled.Sub(start))
	}
	s.waitIdle(t, "k")
	next, phase := s.nextRun("k")
	c.waitArmed(t, next)
	if due := s.lastDue("k"); !due.Equal(missed) {
		t.Fatalf("after the late run of the turn due at +%v, one due at +%v was started too", missed.Sub(start), due.Sub(start))
	}
	if phase.Before(stalled) || phase.After(stalled.Add(interval)) {
		t.Fatalf("after the stall at +%v the nominal time is +%v, want within an interval after it", stalled.Sub(start), phase.Sub(start))
	}
}

// TestSchedulerSkipsTurnsWhileRunning: a run that outlives its interval
// makes the job skip the turns that fall due meanwhile; it is never started
// beside itself, nor in a burst once it ends.
func TestSchedulerSkipsTurnsWhileRunning(t *testing.T) {
	const interval = 10 * time.Second
	s, c := clockedScheduler(t, 0)
	var running, overlap atomic.Int32
	release := make(chan struct{})
	runs := make(chan time.Time, 16)
	s.Upsert("g", "k", interval, func(ctx context.Context) {
		if running.Add(1) > 1 {
			overlap.Store(1)
		}
		defer running.Add(-1)
		runs <- c.Now()
		select {
		case <-release:
		case <-ctx.Done():
		}
	})
	start := c.Now()
	s.Start()
	receive(t, "the first run", runs)
	for range 4 {
		next, _ := s.nextRun("k")
		c.waitArmed(t, next)
		c.Advance(next.Sub(c.Now()))
		s.waitPast(t, "k", next)
	}
	next, _ := s.nextRun("k")
	c.waitArmed(t, next)
	if due := s.lastDue("k"); !due.Equal(start) {
		t.Fatalf("a turn due at +%v was started while the first run lasted", due.Sub(start))
	}
	release <- struct{}{}
	s.waitIdle(t, "k")
	c.waitArmed(t, next)
	if due := s.lastDue("k"); !due.Equal(start) {
		t.Fatalf("the end of the long run started the turn due at +%v at once", due.Sub(start))
	}
	c.Advance(next.Sub(c.Now()))
	if at := receive(t, "the next turn", runs); !at.Equal(next) {
		t.Fatalf("the next turn ran at +%v, due at +%v", at.Sub(start), next.Sub(start))
	}
	close(release)
	if overlap.Load() != 0 {
		t.Fatal("the job ran beside itself")
	}
}

// TestSchedulerRunNowOnTheClock: RunNow brings the next run to now, and
// the turns after it follow one interval apart from there.
func TestSchedulerRunNowOnTheClock(t *testing.T) {
	const interval = time.Minute
	s, c := clockedScheduler(t, 0)
	runs := make(chan time.Time, 4)
	s.Upsert("g", "k", interval, recordRuns(c, runs))
	s.Start()
	receive(t, "the first run", runs)
	s.waitIdle(t, "k")
	next, _ := s.nextRun("k")
	c.waitArmed(t, next)
	c.Advance(interval / 3)
	s.RunNow("k")
	now := c.Now()
	if at := receive(t, "the run asked for", runs); !at.Equal(now) {
		t.Fatalf("RunNow ran at %v, want %v", at, now)
	}
	if _, phase := s.nextRun("k"); !phase.Equal(now.Add(interval)) {
		t.Fatalf("after RunNow the nominal time is %v after it, want %v", phase.Sub(now), interval)
	}
}
