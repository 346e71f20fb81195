package selection

import (
	"math"
	"math/rand/v2"
	"testing"
)

// withinSigmas fails unless count is within z standard deviations of a
// Binomial(n, p) count's mean. Tolerances in these tests are derived this
// way: z = 5 puts a correct implementation outside with probability
// 5.7e-7 per check, and the fixed seeds make each run identical anyway.
func withinSigmas(t *testing.T, what string, count, n int, p, z float64) {
	t.Helper()
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	if d := math.Abs(float64(count) - mean); d > z*sd {
		t.Errorf("%s: %d of %d, want %.1f ± %.1f (%.1f sigma off)", what, count, n, mean, z*sd, d/sd)
	}
}

func TestWeightsDistribution(t *testing.T) {
	w := []float64{1, 2, 0, 3, 4}
	ws := NewWeights(w)
	r := rand.New(rand.NewPCG(1, 2))
	const n = 200000
	counts := make([]int, len(w))
	for range n {
		counts[ws.Pick(r.Float64(), nil)]++
	}
	for i, c := range counts {
		withinSigmas(t, "candidate "+string(rune('0'+i)), c, n, w[i]/10, 5)
	}
	if counts[2] != 0 {
		t.Errorf("zero weight picked %d times", counts[2])
	}
}

func TestWeightsFallbackKeepsProportions(t *testing.T) {
	// The heaviest candidate is out: the others must keep their relative
	// weights, as if it had weight 0.
	w := []float64{1, 2, 0, 3, 14}
	ws := NewWeights(w)
	ok := func(i int) bool { return i != 4 }
	r := rand.New(rand.NewPCG(3, 4))
	const n = 200000
	counts := make([]int, len(w))
	for range n {
		i := ws.Pick(r.Float64(), ok)
		if i < 0 || !ok(i) {
			t.Fatalf("picked %d", i)
		}
		counts[i]++
	}
	for i, c := range counts[:4] {
		withinSigmas(t, "candidate "+string(rune('0'+i)), c, n, w[i]/6, 5)
	}
}

func TestWeightsEdges(t *testing.T) {
	ws := NewWeights([]float64{1, 1})
	for _, c := range []struct {
		u    float64
		ok   func(int) bool
		want int
	}{
		{0, nil, 0},
		{0.25, nil, 0},
		{0.5, nil, 1},
		{math.Nextafter(1, 0), nil, 1},
		{1, nil, 1},          // out of contract, still a candidate
		{math.NaN(), nil, 0}, // likewise
		{-3, nil, 0},         // likewise
		{0.25, func(i int) bool { return i == 1 }, 1},
		{0.75, func(i int) bool { return i == 0 }, 0},
		{0.5, func(int) bool { return false }, -1},
	} {
		if got := ws.Pick(c.u, c.ok); got != c.want {
			t.Errorf("Pick(%v) = %d, want %d", c.u, got, c.want)
		}
	}
	for _, w := range [][]float64{nil, {}, {0, 0}, {-1, math.NaN(), math.Inf(1), math.Inf(-1)}} {
		if got := NewWeights(w).Pick(0.5, nil); got != -1 {
			t.Errorf("weights %v: Pick = %d, want -1", w, got)
		}
	}
	var nilWs *Weights
	if got := nilWs.Pick(0.5, nil); got != -1 {
		t.Errorf("nil weights: Pick = %d, want -1", got)
	}
	// Bad weights count as zero and leave the good ones alone.
	ws = NewWeights([]float64{math.NaN(), 2, -5, math.Inf(1), 2})
	if ws.Total() != 4 || ws.Len() != 5 {
		t.Errorf("total %v len %d, want 4 and 5", ws.Total(), ws.Len())
	}
	for _, u := range []float64{0, 0.3, 0.6, 0.99} {
		if i := ws.Pick(u, nil); i != 1 && i != 4 {
			t.Errorf("Pick(%v) = %d, a candidate with a bad weight", u, i)
		}
	}
	// Huge weights overflow a plain sum.
	ws = NewWeights([]float64{math.MaxFloat64, math.MaxFloat64})
	if a, b := ws.Pick(0.25, nil), ws.Pick(0.75, nil); a != 0 || b != 1 {
		t.Errorf("huge weights: picks %d %d, want 0 1", a, b)
	}
}

func TestWeightsZeroWeightNeverPickedByFallback(t *testing.T) {
	ws := NewWeights([]float64{0, 5, 0, 1, 0})
	r := rand.New(rand.NewPCG(5, 6))
	for range 10000 {
		if i := ws.Pick(r.Float64(), func(i int) bool { return i != 1 }); i != 3 {
			t.Fatalf("picked %d, want 3", i)
		}
	}
}

func TestUniformRange(t *testing.T) {
	for range 10000 {
		if u := Uniform(); !(u >= 0 && u < 1) {
			t.Fatalf("Uniform() = %v", u)
		}
	}
}
