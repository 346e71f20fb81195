package selection

// Anomaly mitigation for weighted_random, after ALB's "automatic target
// weights": a target whose error rate or latency stands out from its peers
// gets less traffic until it behaves like them again.
//
// The request path only counts: Stats.Observe adds to three atomic counters
// (requests, failures, summed latency). A periodic task calls Mitigate,
// which turns the counters into per-target multipliers for the weights of
// the next snapshot. Every few seconds is right; the period is otherwise
// free, since each call decays by the time that really elapsed. The rule,
// for each call at time now:
//
//  1. Window. Each target keeps exponentially decaying sums of requests n,
//     failures f and latency s, with a half-life of 30 s: the sums are
//     multiplied by 2^(-Δt/30s), Δt the time since the target's previous
//     call, and this period's counts are added: a request counts with
//     weight 2^(−age/30 s), so a steady rate r gives n ≈ 43·r (a 43 s
//     effective window).
//  2. Eligibility. A target is judged only with n ≥ 50 (decayed) requests,
//     and only when at least 3 targets are eligible: with fewer, a median
//     says nothing. Ineligible targets are never flagged.
//  3. Outliers. Over the eligible targets, for the error rate e = f/n and
//     the mean latency l = s/n, take the median m and the median absolute
//     deviation MAD, σ = 1.4826·MAD (the standard deviation, were the
//     values normal). The limits are
//     e_lim = m_e + max(3·σ_e, 0.05) and
//     l_lim = m_l + max(3·σ_l, 0.5·m_l, 1 ms):
//     more than 3 robust standard deviations above the median, and
//     materially so (5 points of error rate; 1.5× the median latency), so
//     that a pool of near-identical targets has no outlier. A target is an
//     outlier when e − 2·√(e(1−e)/n) > e_lim (its error rate is above the
//     limit by more than its own sampling noise) or l > l_lim. Its severity
//     is the larger of (e − m_e)/(e_lim − m_e) and (l − m_l)/(l_lim − m_l),
//     at least 1 for an outlier. Being measured against the median, fewer
//     than half the eligible targets can be outliers.
//  4. Cap. After a call, at most ⌊N/2⌋ of the N targets are below 1,
//     counting those still recovering (recovery, step 6, is applied first
//     so that slots freed during the period count as free): outliers take
//     the free slots in order of severity (highest first, then lowest
//     index); an outlier left without a slot is reported anomalous but not
//     mitigated, so a fault that hits most of the pool cannot shed most of
//     its capacity.
//  5. Mitigation. An outlier with a slot gets multiplier
//     min(current, clamp(0.5/severity, 0.1, 0.5)): 0.5 at the limit, 0.1
//     from 5× the limit distance on; never 0, so it keeps a trickle of
//     traffic that shows when it recovers. It never rises while flagged.
//  6. Recovery. A target below 1 that this call does not mitigate (no
//     longer an outlier, or an outlier without a slot) rises linearly by
//     Δt/60 s, from 0.1 back to 1 within a minute, the way slow start
//     brings a target in.
//
// Mitigate must not run concurrently with itself over the same Stats (one
// ticker per group); Observe and Anomaly run concurrently with anything.

import (
	"math"
	"slices"
	"sync/atomic"
	"time"
)

const (
	anomalyHalfLife   = 30 * time.Second
	anomalyMinSamples = 50
	anomalyMinTargets = 3
	anomalyK          = 3      // robust standard deviations
	madToSigma        = 1.4826 // σ = 1.4826·MAD for normal data
	anomalyErrDelta   = 0.05
	anomalyErrZ       = 2
	anomalyLatRatio   = 0.5
	anomalyLatDelta   = float64(time.Millisecond)
	mitigateAtLimit   = 0.5
	mitigateFloor     = 0.1
	anomalyRecover    = 60 * time.Second
)

// Stats is one target's record for anomaly mitigation. The zero value is
// ready; keep the same Stats for a target across snapshots, since its
// window and multiplier live here.
type Stats struct {
	// Request path: cumulative counters, wrapping (deltas are taken
	// modulo 2^64, so wrapping is harmless; summed nanoseconds would
	// overflow an int64 within months on a busy target).
	requests atomic.Uint64
	failures atomic.Uint64
	latency  atomic.Uint64 // nanoseconds

	// Mitigate's own, touched by it only.
	seen                 bool
	last                 time.Time
	prevReq, prevFail    uint64
	prevLat              uint64
	n, f, s              float64 // decayed sums
	mult                 float64 // see Multiplier; 0 means 1, so that the zero Stats is ready
	anomalous, mitigated atomic.Bool
}

// Observe records one finished request. failed is the caller's verdict
// (a 5xx it counts, a connection or TLS error, a timeout).
func (st *Stats) Observe(latency time.Duration, failed bool) {
	st.requests.Add(1)
	if failed {
		st.failures.Add(1)
	}
	if latency > 0 {
		st.latency.Add(uint64(latency))
	}
}

// Anomaly reports the outcome of the last Mitigate for the target, as
// DescribeTargetHealth's AnomalyDetection shows it: anomalous (an outlier,
// mitigated or not) and mitigated (its multiplier is below 1, including
// while it recovers).
func (st *Stats) Anomaly() (anomalous, mitigated bool) {
	return st.anomalous.Load(), st.mitigated.Load()
}

// advance folds the counts since the previous call into the decaying sums
// and returns the time since then (0 the first time or if the clock went
// back, which therefore neither decays nor recovers anything).
func (st *Stats) advance(now time.Time) time.Duration {
	// Failures before requests: Observe counts the request first, so
	// every failure read has its request read too and f ≤ n holds.
	fail, lat := st.failures.Load(), st.latency.Load()
	req := st.requests.Load()
	var dt time.Duration
	if st.seen {
		dt = max(now.Sub(st.last), 0)
	}
	decay := math.Exp2(-float64(dt) / float64(anomalyHalfLife))
	st.n = st.n*decay + float64(req-st.prevReq)
	st.f = st.f*decay + float64(fail-st.prevFail)
	st.s = st.s*decay + float64(lat-st.prevLat)
	st.prevReq, st.prevFail, st.prevLat = req, fail, lat
	if !st.seen || now.After(st.last) {
		st.last = now
	}
	st.seen = true
	return dt
}

type judged struct {
	i        int
	e, l, n  float64
	severity float64
}

// Mitigate applies the rule of the file comment and returns the weight
// multiplier of each target, in (0, 1]; a nil entry gets 1.
func Mitigate(stats []*Stats, now time.Time) []float64 {
	out := make([]float64, len(stats))
	dts := make([]time.Duration, len(stats))
	var eligible []judged
	total := 0
	for i, st := range stats {
		if st == nil {
			continue
		}
		total++
		dts[i] = st.advance(now)
		if st.n >= anomalyMinSamples {
			eligible = append(eligible, judged{i: i, e: st.f / st.n, l: st.s / st.n, n: st.n})
		}
	}

	flagged := outliers(eligible)
	isFlagged := make([]bool, len(stats))
	for _, j := range flagged {
		isFlagged[j.i] = true
	}
	// Recovery first, so that a slot freed during this period is free
	// for this call's outliers.
	below := 0
	for i, st := range stats {
		if st != nil && !isFlagged[i] {
			st.recover(dts[i])
			if st.Multiplier() < 1 {
				below++
			}
		}
	}
	limit := total / 2
	for _, j := range flagged {
		st := stats[j.i]
		if below >= limit {
			st.recover(dts[j.i]) // reported, not mitigated
			continue
		}
		below++
		st.mult = min(st.Multiplier(), min(max(mitigateAtLimit/j.severity, mitigateFloor), mitigateAtLimit))
	}
	for i, st := range stats {
		if st == nil {
			out[i] = 1
			continue
		}
		out[i] = st.Multiplier()
		st.anomalous.Store(isFlagged[i])
		st.mitigated.Store(out[i] < 1)
	}
	return out
}

// Multiplier is the target's weight multiplier as the last Mitigate left
// it, in (0, 1]. It belongs to Mitigate's side: read it where Mitigate
// cannot run at the same time (under the lock that serialises both).
func (st *Stats) Multiplier() float64 {
	if st.mult == 0 {
		return 1
	}
	return st.mult
}

// recover raises the multiplier by dt/anomalyRecover, up to 1.
func (st *Stats) recover(dt time.Duration) {
	if st.mult == 0 {
		return
	}
	st.mult += float64(dt) / float64(anomalyRecover)
	if st.mult >= 1 {
		st.mult = 0
	}
}

// outliers returns the outliers among the eligible targets, most severe
// first.
func outliers(eligible []judged) []judged {
	if len(eligible) < anomalyMinTargets {
		return nil
	}
	errs := make([]float64, len(eligible))
	lats := make([]float64, len(eligible))
	for k, j := range eligible {
		errs[k], lats[k] = j.e, j.l
	}
	mE, sE := medianSigma(errs)
	mL, sL := medianSigma(lats)
	dE := max(anomalyK*sE, anomalyErrDelta)
	dL := max(anomalyK*sL, anomalyLatRatio*mL, anomalyLatDelta)
	var out []judged
	for _, j := range eligible {
		sev := 0.0
		if j.e-anomalyErrZ*math.Sqrt(j.e*(1-j.e)/j.n) > mE+dE {
			sev = (j.e - mE) / dE
		}
		if j.l > mL+dL {
			sev = max(sev, (j.l-mL)/dL)
		}
		if sev > 0 {
			j.severity = max(sev, 1)
			out = append(out, j)
		}
	}
	slices.SortStableFunc(out, func(a, b judged) int {
		switch {
		case a.severity > b.severity:
			return -1
		case a.severity < b.severity:
			return 1
		}
		return a.i - b.i
	})
	return out
}

// medianSigma returns the median of x and 1.4826 times its median absolute
// deviation. It reorders x.
func medianSigma(x []float64) (med, sigma float64) {
	med = median(x)
	for k, v := range x {
		x[k] = math.Abs(v - med)
	}
	return med, madToSigma * median(x)
}

func median(x []float64) float64 {
	slices.Sort(x)
	n := len(x)
	if n%2 == 1 {
		return x[n/2]
	}
	return (x[n/2-1] + x[n/2]) / 2
}
