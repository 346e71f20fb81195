package healthcheck

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// defaultSlots is the default per-group bound, spelled out so that a change
// of the default is a deliberate change of these tests too.
const defaultSlots = 64

// blackholed returns a job that behaves like a check of a target dropping
// every packet: it holds its slot until its timeout, or until the scheduler
// stops. blocked counts the runs in progress.
func blackholed(blocked *atomic.Int64, timeout time.Duration) func(context.Context) {
	return func(ctx context.Context) {
		blocked.Add(1)
		defer blocked.Add(-1)
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}

// TestSchedulerBlackholedGroupDoesNotDelayOthers: a group whose targets all
// time out keeps every slot it may have busy and a long backlog behind them,
// yet the check of another group starts on time, turn after turn. Under a
// single FIFO for every group the same check waits behind the whole backlog:
// seconds here.
func TestSchedulerBlackholedGroupDoesNotDelayOthers(t *testing.T) {
	const (
		dead      = 300                   // far more than the group's slots can serve
		timeout   = time.Second           // each dead check holds its slot this long
		deadEvery = 50 * time.Millisecond // so the dead group always has a backlog
		every     = 20 * time.Millisecond // the healthy group's interval
		turns     = 25                    // healthy turns observed
		maxLag    = time.Second           // the promise: due to started, whatever other groups do
		patience  = 30 * time.Second      // only a broken scheduler gets near this
		healthy   = "healthy"
		deadGroup = "dead"
	)
	s := NewScheduler(0)
	s.SetFirstJitter(0)
	lags := make(chan time.Duration, 4*turns)
	s.onStart = func(group, _ string, due, start time.Time) {
		if group == healthy {
			select {
			case lags <- start.Sub(due):
			default:
			}
		}
	}
	t.Cleanup(s.Stop)

	var blocked atomic.Int64
	for i := range dead {
		s.Upsert(deadGroup, "dead-"+strconv.Itoa(i), deadEvery, blackholed(&blocked, timeout))
	}
	s.Start()
	waitFor(t, "the dead group to fill its slots", func() bool { return blocked.Load() >= defaultSlots })

	var runs atomic.Int64
	s.Upsert(healthy, "canary", every, counter(&runs))
	deadline := time.NewTimer(patience)
	defer deadline.Stop()
	var worst time.Duration
	for n := range turns {
		select {
		case lag := <-lags:
			if lag > maxLag {
				t.Fatalf("healthy turn %d started %v after it was due (limit %v) beside %d blackholed checks",
					n+1, lag, maxLag, blocked.Load())
			}
			worst = max(worst, lag)
		case <-deadline.C:
			t.Fatalf("only %d healthy turns in %v beside %d blackholed checks", n, patience, blocked.Load())
		}
	}
	// The dead group was still saturated, or the test proved nothing.
	if b := blocked.Load(); b < defaultSlots/2 {
		t.Fatalf("only %d blackholed checks in flight at the end", b)
	}
	t.Logf("%d healthy turns, worst lag %v, beside %d blackholed checks", turns, worst, blocked.Load())
}

// BenchmarkSchedulerBesideBlackholed measures how often a healthy group's
// check runs beside a group of N blackholed targets, in scaled time: the
// healthy check is due every 100ms (10/s when nothing is in its way), and
// every dead check is due every 500ms and holds its slot 400ms, so 80 dead
// targets already keep 64 slots busy. Each iteration observes a fixed 10s
// window after a 1s warm-up; run it with -benchtime 1x.
//
// checks/s is the healthy group's rate, max-gap-ms the longest wait between
// two of its runs (100ms ± 10% is on time).
func BenchmarkSchedulerBesideBlackholed(b *testing.B) {
	for _, n := range []int{0, 80, 160, 500} {
		b.Run("dead="+strconv.Itoa(n), func(b *testing.B) { benchBesideBlackholed(b, n) })
	}
}

func benchBesideBlackholed(b *testing.B, dead int) {
	const (
		every     = 100 * time.Millisecond
		deadEvery = 500 * time.Millisecond
		timeout   = 400 * time.Millisecond
		warmUp    = time.Second
		window    = 10 * time.Second
	)
	s := NewScheduler(0)
	defer s.Stop()
	// Spread the dead checks over their interval, as a long-running group's
	// would be.
	s.SetFirstJitter(deadEvery)
	var blocked atomic.Int64
	for i := range dead {
		s.Upsert("dead", "dead-"+strconv.Itoa(i), deadEvery, blackholed(&blocked, timeout))
	}
	var runs atomic.Int64
	var last, gap atomic.Int64 // unix nanoseconds, nanoseconds
	s.Upsert("healthy", "canary", every, func(context.Context) {
		now := time.Now().UnixNano()
		if prev := last.Swap(now); prev != 0 {
			for {
				g := gap.Load()
				if now-prev <= g || gap.CompareAndSwap(g, now-prev) {
					break
				}
			}
		}
		runs.Add(1)
	})
	s.Start()
	time.Sleep(warmUp) // the steady state is what is measured

	var done int64
	var wall time.Duration
	gap.Store(0)
	b.ResetTimer()
	for range b.N {
		r0, t0 := runs.Load(), time.Now()
		time.Sleep(window) // a fixed wall window is the measurement itself
		done += runs.Load() - r0
		wall += time.Since(t0)
	}
	b.StopTimer()
	b.ReportMetric(float64(done)/wall.Seconds(), "checks/s")
	b.ReportMetric(float64(time.Duration(gap.Load()).Milliseconds()), "max-gap-ms")
	b.ReportMetric(float64(blocked.Load()), "dead-in-flight")
}
