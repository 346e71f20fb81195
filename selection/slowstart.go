package selection

import "time"

// SlowStartFloor is the smallest factor SlowStartFactor returns. AWS says a
// target in slow start gets a "linearly increasing share" of the traffic;
// a pure ramp from 0 would starve it at first (at 1 s into a 900 s period it
// would get 0.1 % of a full share, often no request at all), and a target
// that gets no request neither warms up nor shows a failure that passive
// health could catch. 10 % is Envoy's default min_weight_percent for the
// same ramp, the precedent operators already know. The floor is a clamp,
// not an offset: from 10 % of the period on, the factor is exactly
// elapsed/duration, the linear ramp AWS describes.
const SlowStartFloor = 0.1

// SlowStartFactor is the share of a full target's traffic that a target in
// slow start since `since` may get at `now`: max(SlowStartFloor,
// elapsed/duration), and 1 once the period is over or when slow start is
// off (duration <= 0). A `since` in the future (a clock step back) counts as
// just entered rather than as over, so a clock jump never hands a cold
// target its full share.
func SlowStartFactor(now, since time.Time, duration time.Duration) float64 {
	if duration <= 0 {
		return 1
	}
	elapsed := now.Sub(since)
	if elapsed >= duration {
		return 1
	}
	f := float64(elapsed) / float64(duration)
	if f < SlowStartFloor {
		return SlowStartFloor
	}
	return f
}

// AcceptRR tells round robin whether to keep candidate i, whose slow-start
// factor is `factor`, given u uniform in [0,1): it keeps it with
// probability factor (always when factor >= 1). On a refusal the caller
// moves on to the next candidate by taking the next value of its shared
// round-robin cursor, as RoundRobinRamp does.
//
// Why this gives the ramped share: the cursor visits every candidate once
// per n draws; a full target keeps all its visits, a ramping one keeps a
// fraction f of them in expectation, so its share is f times a full
// target's, which is what weighted selection with weight f would give,
// without building weights per request and without any lock (the only
// shared state is the cursor the caller already increments atomically).
// Moving on through the shared cursor, rather than to i+1, spreads the
// refused requests over all targets instead of piling them onto the
// ramping target's neighbour.
func AcceptRR(factor, u float64) bool {
	return factor >= 1 || u < factor
}

// rampTries bounds the refusals Ramp accepts for one request. A refusal is
// followed by a full target's acceptance unless most of the pool ramps:
// with 90 % of it at the floor, 16 refusals in a row happen to 3.4 % of
// requests, with half of it 3·10⁻⁶. A bound in n instead would make a pool
// with few acceptable targets cost O(n²) per request.
const rampTries = 16

// Ramp is slow start by rejection over any way of drawing a candidate:
// it draws with draw (-1: none is acceptable, which it returns) and keeps
// the draw by AcceptRR with its factor, drawing again on a refusal.
//
// After rampTries refusals in a row it keeps the last candidate anyway:
// that happens when (nearly) every acceptable candidate is ramping, and a
// request must not fail because all targets are warming up.
func Ramp(draw func() int, factor func(i int) float64, uniform func() float64) int {
	last := -1
	for range rampTries {
		i := draw()
		if i < 0 {
			return -1
		}
		if AcceptRR(factor(i), uniform()) {
			return i
		}
		last = i
	}
	return last
}

// RoundRobinRamp is round robin with slow start: Ramp over RoundRobin,
// drawing cursor values from next (normally an atomic counter's
// Add(1)-1). It returns -1 when none is acceptable.
func RoundRobinRamp(n int, next func() uint64, factor func(i int) float64, ok func(i int) bool, uniform func() float64) int {
	return Ramp(func() int { return RoundRobin(n, next(), ok) }, factor, uniform)
}
