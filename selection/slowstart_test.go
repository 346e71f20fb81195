package selection

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestSlowStartFactor(t *testing.T) {
	since := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	d := 100 * time.Second
	for _, c := range []struct {
		at   time.Duration
		dur  time.Duration
		want float64
	}{
		{0, 0, 1},              // slow start off
		{-time.Hour, 0, 1},     // off whatever the clock says
		{0, d, SlowStartFloor}, // just entered: the floor, not nothing
		{time.Nanosecond, d, SlowStartFloor},
		{5 * time.Second, d, SlowStartFloor},
		{10 * time.Second, d, 0.10},
		{25 * time.Second, d, 0.25},
		{50 * time.Second, d, 0.50},
		{75 * time.Second, d, 0.75},
		{99 * time.Second, d, 0.99},
		{d, d, 1},
		{time.Hour, d, 1},
		{-time.Second, d, SlowStartFloor}, // clock stepped back
	} {
		if got := SlowStartFactor(since.Add(c.at), since, c.dur); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("at %v of %v: factor %v, want %v", c.at, c.dur, got, c.want)
		}
	}
}

func TestAcceptRR(t *testing.T) {
	if !AcceptRR(1, 0.999) || !AcceptRR(2, 0.5) || AcceptRR(0, 0) || AcceptRR(0.5, 0.5) || !AcceptRR(0.5, 0.49) {
		t.Fatal("AcceptRR thresholds")
	}
	r := rand.New(rand.NewPCG(7, 8))
	const n = 100000
	for _, f := range []float64{0.1, 0.25, 0.5, 0.75} {
		acc := 0
		for range n {
			if AcceptRR(f, r.Float64()) {
				acc++
			}
		}
		withinSigmas(t, fmt.Sprintf("accepted at factor %v", f), acc, n, f, 5)
	}
}

// TestSlowStartRampShare runs round robin over four targets, one of which
// entered slow start at t0, at 25, 50 and 75 % of the period, with an
// injected clock and a fixed-seed generator.
//
// Tolerance: the shared cursor visits every target once per four draws, so
// each full target gets exactly its visits (±1), and the ramping target
// gets Binomial(V, f) of its V visits, V being about a full target's
// count. So ramp/full = f ± 5·√(f(1−f)/V), the 5-sigma bound of that
// binomial proportion. Its share of all requests is then f/(3+f).
func TestSlowStartRampShare(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	const period = 200 * time.Second
	const n, requests = 4, 400000
	for _, pct := range []int{25, 50, 75} {
		now := t0.Add(period * time.Duration(pct) / 100)
		since := []time.Time{t0.Add(-time.Hour), t0, t0.Add(-time.Hour), t0.Add(-time.Hour)}
		factor := func(i int) float64 { return SlowStartFactor(now, since[i], period) }
		f := factor(1)
		if math.Abs(f-float64(pct)/100) > 1e-12 {
			t.Fatalf("%d%%: factor %v", pct, f)
		}
		r := rand.New(rand.NewPCG(uint64(pct), 9))
		var cursor uint64
		next := func() uint64 { cursor++; return cursor - 1 }
		counts := make([]int, n)
		for range requests {
			counts[RoundRobinRamp(n, next, factor, all, r.Float64)]++
		}
		full := float64(counts[0]+counts[2]+counts[3]) / 3
		for _, i := range []int{0, 2, 3} {
			if math.Abs(float64(counts[i])-full) > 1 {
				t.Errorf("%d%%: full targets uneven: %v", pct, counts)
			}
		}
		ratio := float64(counts[1]) / full
		tol := 5 * math.Sqrt(f*(1-f)/full)
		if math.Abs(ratio-f) > tol {
			t.Errorf("%d%%: ramping target got %.4f of a full share, want %.2f ± %.4f", pct, ratio, f, tol)
		}
		t.Logf("%d%% of the period: factor %.2f, ramping target %.4f of a full share, %.4f of all requests (expected %.4f)",
			pct, f, ratio, float64(counts[1])/requests, f/(n-1+f))
	}
}

func TestRoundRobinRampGivesUpWhenAllRamp(t *testing.T) {
	var cursor uint64
	next := func() uint64 { cursor++; return cursor - 1 }
	never := func() float64 { return 0.999 }
	low := func(int) float64 { return SlowStartFloor }
	if i := RoundRobinRamp(3, next, low, all, never); i < 0 {
		t.Fatal("every target ramping: no target at all")
	}
	if i := RoundRobinRamp(3, next, low, func(int) bool { return false }, never); i != -1 {
		t.Fatalf("none acceptable: got %d", i)
	}
	if i := RoundRobinRamp(0, next, low, all, never); i != -1 {
		t.Fatalf("empty: got %d", i)
	}
}

// TestRampOverWeights: Ramp serves any draw, as weighted_random's slow
// start uses it: a full candidate is kept at its first draw, a refused one
// is drawn again, and after rampTries refusals the last draw is kept.
func TestRampOverWeights(t *testing.T) {
	ws := NewWeights([]float64{1, 3})
	draws := 0
	draw := func() int { draws++; return ws.Pick(0.9, nil) } // candidate 1
	if i := Ramp(draw, func(int) float64 { return 1 }, func() float64 { return 0.999 }); i != 1 || draws != 1 {
		t.Fatalf("full factor: picked %d after %d draws", i, draws)
	}
	draws = 0
	if i := Ramp(draw, func(int) float64 { return SlowStartFloor }, func() float64 { return 0.999 }); i != 1 || draws != rampTries {
		t.Fatalf("always refused: picked %d after %d draws, want 1 after %d", i, draws, rampTries)
	}
	none := func() int { return ws.Pick(0.5, func(int) bool { return false }) }
	if i := Ramp(none, func(int) float64 { return 1 }, func() float64 { return 0 }); i != -1 {
		t.Fatalf("nothing acceptable: got %d", i)
	}
}
