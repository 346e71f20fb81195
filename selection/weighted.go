package selection

import (
	"math"
	"math/rand/v2"
)

// Weights is the prepared form of the weights of one immutable snapshot of
// candidates (weighted_random). Building it costs O(n) once so that every
// request pays only a binary search; a snapshot that changes builds a new
// one rather than mutating this, which is what lets Pick run without locks.
type Weights struct {
	// cum[i] is the sum of the weights of candidates 0..i. Zero weights
	// repeat the previous sum, so the strict search in Pick can never land
	// on them.
	cum []float64
	// last is the last candidate with a positive weight: rounding can put
	// u*total a hair above cum[n-1], and that mass belongs to it.
	last int
}

// NewWeights prepares w for Pick. A weight that is zero, negative, NaN or
// infinite counts as zero (never picked): weights come from configuration
// times multipliers (slow start, anomaly mitigation), and a bad factor must
// take one candidate out, not poison the sums of all others.
func NewWeights(w []float64) *Weights {
	ws := &Weights{cum: make([]float64, len(w)), last: -1}
	sum := 0.0
	for i, x := range w {
		if x > 0 && !math.IsInf(x, 1) {
			sum += x
			ws.last = i
		}
		ws.cum[i] = sum
	}
	if math.IsInf(sum, 1) {
		// Finite weights near MaxFloat64 can still overflow the sum;
		// scaling them all down keeps the proportions.
		return NewWeights(scaled(w))
	}
	return ws
}

func scaled(w []float64) []float64 {
	out := make([]float64, len(w))
	for i, x := range w {
		if x > 0 && !math.IsInf(x, 1) {
			out[i] = x / float64(len(w))
		}
	}
	return out
}

// Len is the number of candidates the weights were built for.
func (ws *Weights) Len() int { return len(ws.cum) }

// Total is the sum of the positive weights.
func (ws *Weights) Total() float64 {
	if len(ws.cum) == 0 {
		return 0
	}
	return ws.cum[len(ws.cum)-1]
}

// weight recovers candidate i's weight from the cumulative sums; keeping
// only cum halves the memory the snapshot holds per candidate.
func (ws *Weights) weight(i int) float64 {
	if i == 0 {
		return ws.cum[0]
	}
	return ws.cum[i] - ws.cum[i-1]
}

// Pick returns candidate i with probability w[i]/Σw, given u uniform in
// [0,1) (see Uniform), restricted to the candidates ok accepts (nil accepts
// all). It returns -1 when no acceptable candidate has a positive weight.
//
// The common case, a pick that is ok, is one binary search. When the pick
// is not ok, the position of u inside the picked candidate's interval is
// itself uniform and independent of which candidate it was, so it serves as
// the second draw for a weighted pick among the ok candidates only: the
// result is exactly the weighted distribution over the ok ones, with no
// second random number and no retry loop that could spin when most
// candidates are out. That fallback is O(n), and calls ok up to twice per
// candidate; if ok changes its mind in between (it reads live state), the
// pick is still one it accepted.
func (ws *Weights) Pick(u float64, ok func(i int) bool) int {
	if ws == nil || ws.last < 0 {
		return -1
	}
	if !(u >= 0) { // also NaN
		u = 0
	}
	total := ws.cum[len(ws.cum)-1]
	x := u * total
	// The smallest i <= last with cum[i] > x (last when rounding left
	// none), by hand: sort.Search would add an indirect call per step.
	i, hi := 0, ws.last
	for i < hi {
		m := int(uint(i+hi) >> 1)
		if ws.cum[m] > x {
			hi = m
		} else {
			i = m + 1
		}
	}
	if ok == nil || ok(i) {
		return i
	}
	lo := 0.0
	if i > 0 {
		lo = ws.cum[i-1]
	}
	v := (x - lo) / ws.weight(i)
	return ws.pickAmong(v, ok)
}

// pickAmong is the O(n) weighted pick among the candidates ok accepts.
func (ws *Weights) pickAmong(v float64, ok func(i int) bool) int {
	if !(v >= 0) {
		v = 0
	} else if v >= 1 {
		v = math.Nextafter(1, 0)
	}
	sum := 0.0
	for i := 0; i <= ws.last; i++ {
		if w := ws.weight(i); w > 0 && ok(i) {
			sum += w
		}
	}
	if sum == 0 {
		return -1
	}
	x, acc, lastOK := v*sum, 0.0, -1
	for i := 0; i <= ws.last; i++ {
		w := ws.weight(i)
		if w <= 0 || !ok(i) {
			continue
		}
		lastOK = i
		if acc += w; acc > x {
			return i
		}
	}
	return lastOK
}

// Uniform returns a uniform float64 in [0,1) for Pick and AcceptRR. It
// draws from math/rand/v2's top-level generator, which is backed by the
// runtime's per-thread ChaCha8 state: no mutex shared across cores (unlike
// math/rand v1's global source) and no seeding to get wrong. Selection
// needs spread, not secrecy, so this is the right cost.
func Uniform() float64 { return rand.Float64() }
