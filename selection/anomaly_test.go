package selection

import (
	"math"
	"sync"
	"testing"
	"time"
)

// feed records requests on st: n requests of latency lat, the first fail of
// them failed.
func feed(st *Stats, n, fail int, lat time.Duration) {
	for k := range n {
		st.Observe(lat, k < fail)
	}
}

func newPool(n int) []*Stats {
	p := make([]*Stats, n)
	for i := range p {
		p[i] = new(Stats)
	}
	return p
}

func below1(m []float64) (idx []int) {
	for i, v := range m {
		if v < 1 {
			idx = append(idx, i)
		}
	}
	return idx
}

func TestMitigateHealthyPoolIsLeftAlone(t *testing.T) {
	pool := newPool(10)
	for i, st := range pool {
		// Similar targets: 0–2 % errors, 18–27 ms.
		feed(st, 500, i%3*5, time.Duration(18+i)*time.Millisecond)
	}
	m := Mitigate(pool, t0)
	if got := below1(m); got != nil {
		t.Fatalf("mitigated %v: %v", got, m)
	}
}

func TestMitigateErrorOutlier(t *testing.T) {
	pool := newPool(10)
	for i, st := range pool {
		fail := 2
		if i == 4 {
			fail = 250 // 50 % errors
		}
		feed(st, 500, fail, 20*time.Millisecond)
	}
	m := Mitigate(pool, t0)
	if got := below1(m); len(got) != 1 || got[0] != 4 {
		t.Fatalf("mitigated %v, want [4]: %v", got, m)
	}
	if m[4] != mitigateFloor {
		t.Errorf("multiplier %v, want %v at 10 times the limit distance", m[4], mitigateFloor)
	}
	if a, mit := pool[4].Anomaly(); !a || !mit {
		t.Errorf("anomaly %v, mitigated %v", a, mit)
	}
	if a, mit := pool[3].Anomaly(); a || mit {
		t.Errorf("healthy target: anomaly %v, mitigated %v", a, mit)
	}
}

func TestMitigateLatencyOutlierGraded(t *testing.T) {
	pool := newPool(5)
	for i, st := range pool {
		lat := 20 * time.Millisecond
		if i == 2 {
			lat = 32 * time.Millisecond // 1.6× the median: just past the 1.5× floor
		}
		feed(st, 200, 0, lat)
	}
	m := Mitigate(pool, t0)
	// Severity (32−20)/10 = 1.2, so 0.5/1.2.
	if got := below1(m); len(got) != 1 || got[0] != 2 || math.Abs(m[2]-0.5/1.2) > 1e-9 {
		t.Fatalf("got %v", m)
	}
}

func TestMitigateNeedsSamplesAndPeers(t *testing.T) {
	// Too few requests on the bad target.
	pool := newPool(5)
	for i, st := range pool {
		if i == 0 {
			feed(st, anomalyMinSamples-1, anomalyMinSamples-1, time.Second)
		} else {
			feed(st, 500, 0, 10*time.Millisecond)
		}
	}
	if got := below1(Mitigate(pool, t0)); got != nil {
		t.Fatalf("judged on too few samples: %v", got)
	}
	// Too few eligible targets to have a median.
	pool = newPool(5)
	feed(pool[0], 500, 500, time.Second)
	feed(pool[1], 500, 0, 10*time.Millisecond)
	if got := below1(Mitigate(pool, t0)); got != nil {
		t.Fatalf("judged with two eligible targets: %v", got)
	}
	// A small error rate on few samples is noise, not an outlier: 3 of 50
	// is 6 %, but 6 % − 2·√(0.06·0.94/50) < 5 %.
	pool = newPool(5)
	for i, st := range pool {
		fail := 0
		if i == 0 {
			fail = 3
		}
		feed(st, 50, fail, 10*time.Millisecond)
	}
	if got := below1(Mitigate(pool, t0)); got != nil {
		t.Fatalf("noise mitigated: %v", got)
	}
}

func TestMitigateRecoversGradually(t *testing.T) {
	pool := newPool(5)
	for i, st := range pool {
		fail := 0
		if i == 0 {
			fail = 400
		}
		feed(st, 400, fail, 10*time.Millisecond)
	}
	now := t0
	if m := Mitigate(pool, now); m[0] != mitigateFloor {
		t.Fatalf("not mitigated: %v", m)
	}
	// Still failing: stays down, never rises while flagged.
	now = now.Add(10 * time.Second)
	feed(pool[0], 40, 40, 10*time.Millisecond)
	for _, st := range pool[1:] {
		feed(st, 400, 0, 10*time.Millisecond)
	}
	if m := Mitigate(pool, now); m[0] != mitigateFloor {
		t.Fatalf("rose while failing: %v", m)
	}
	// Fixed: a flood of good requests brings its windowed error rate
	// down; from then on it rises by Δt/60 s per call.
	now = now.Add(10 * time.Second)
	feed(pool[0], 100000, 0, 10*time.Millisecond)
	m := Mitigate(pool, now)
	want := mitigateFloor + 10.0/60
	if math.Abs(m[0]-want) > 1e-9 {
		t.Fatalf("after recovery: %v, want %v", m[0], want)
	}
	if a, mit := pool[0].Anomaly(); a || !mit {
		t.Fatalf("recovering: anomaly %v, mitigated %v", a, mit)
	}
	for range 5 {
		now = now.Add(10 * time.Second)
		want = min(want+10.0/60, 1)
		if m = Mitigate(pool, now); math.Abs(m[0]-want) > 1e-9 {
			t.Fatalf("at %v: %v, want %v", now.Sub(t0), m[0], want)
		}
	}
	if m[0] != 1 {
		t.Fatalf("not back to 1 after a minute: %v", m[0])
	}
	if a, mit := pool[0].Anomaly(); a || mit {
		t.Fatalf("recovered: anomaly %v, mitigated %v", a, mit)
	}
}

func TestMitigateNeverMoreThanHalf(t *testing.T) {
	pool := newPool(10)
	now := t0
	// Round 1: targets 0–2 fail.
	for i, st := range pool {
		fail := 0
		if i < 3 {
			fail = 900
		}
		feed(st, 1000, fail, 10*time.Millisecond)
	}
	if got := below1(Mitigate(pool, now)); len(got) != 3 {
		t.Fatalf("round 1: mitigated %v", got)
	}
	// Round 2: 0–2 are fixed but still recovering, 3–5 fail (3 worst):
	// two slots are left of ⌊10/2⌋, so 3 and 4 get them and 5 is only
	// reported.
	now = now.Add(time.Second)
	for i, st := range pool {
		switch {
		case i < 3:
			feed(st, 1000000, 0, 10*time.Millisecond)
		case i < 6:
			feed(st, 1000, 1000-(i-3)*100, 10*time.Millisecond)
		default:
			feed(st, 1000, 0, 10*time.Millisecond)
		}
	}
	m := Mitigate(pool, now)
	if got := below1(m); len(got) != 5 || got[3] != 3 || got[4] != 4 {
		t.Fatalf("round 2: mitigated %v: %v", got, m)
	}
	if a, mit := pool[5].Anomaly(); !a || mit {
		t.Fatalf("target 5: anomaly %v, mitigated %v; want reported, not mitigated", a, mit)
	}
	// As the first three recover, target 5 gets a slot.
	now = now.Add(time.Minute)
	for _, st := range pool[3:6] {
		feed(st, 1000, 900, 10*time.Millisecond)
	}
	m = Mitigate(pool, now)
	if got := below1(m); len(got) != 3 || got[0] != 3 || got[2] != 5 {
		t.Fatalf("round 3: mitigated %v: %v", got, m)
	}
}

func TestMitigateOddInputs(t *testing.T) {
	if m := Mitigate(nil, t0); len(m) != 0 {
		t.Fatal(m)
	}
	pool := []*Stats{nil, new(Stats), nil}
	feed(pool[1], 100, 100, time.Second)
	if m := Mitigate(pool, t0); m[0] != 1 || m[1] != 1 || m[2] != 1 {
		t.Fatal(m)
	}
	// The clock stepping back neither decays nor recovers, and nothing
	// turns NaN.
	pool = newPool(4)
	for i, st := range pool {
		feed(st, 100, 100*(i/3), time.Duration(i)*time.Millisecond)
	}
	a := Mitigate(pool, t0)
	b := Mitigate(pool, t0.Add(-time.Hour))
	for i := range a {
		if math.IsNaN(b[i]) || b[i] != a[i] {
			t.Fatalf("clock back: %v then %v", a, b)
		}
	}
	// Negative latencies are ignored, and counters that wrap give
	// correct deltas.
	st := new(Stats)
	st.Observe(-time.Second, false)
	if st.latency.Load() != 0 {
		t.Fatal("negative latency counted")
	}
	st.requests.Store(math.MaxUint64 - 1)
	st.prevReq = math.MaxUint64 - 1
	st.seen, st.last = true, t0
	st.Observe(0, false)
	st.Observe(0, false)
	st.Observe(0, false)
	st.advance(t0)
	if st.n != 3 {
		t.Fatalf("across the wrap: n = %v, want 3", st.n)
	}
}

func TestMitigateDecay(t *testing.T) {
	st := new(Stats)
	feed(st, 1000, 500, 0)
	st.advance(t0)
	st.advance(t0.Add(anomalyHalfLife))
	if math.Abs(st.n-500) > 1e-9 || math.Abs(st.f-250) > 1e-9 {
		t.Fatalf("after one half-life: n %v f %v", st.n, st.f)
	}
}

// TestStatsConcurrent runs Observe from many goroutines while Mitigate
// runs, for the race detector, and checks that nothing is lost.
func TestStatsConcurrent(t *testing.T) {
	pool := newPool(4)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 2000 {
				pool[(g+k)%4].Observe(time.Millisecond, k%10 == 0)
			}
		}()
	}
	for k := range 50 {
		Mitigate(pool, t0.Add(time.Duration(k)*time.Millisecond))
		pool[0].Anomaly()
	}
	wg.Wait()
	total := 0
	for _, st := range pool {
		total += int(st.requests.Load())
		if st.failures.Load() > st.requests.Load() {
			t.Fatal("more failures than requests")
		}
	}
	if total != 8*2000 {
		t.Fatalf("%d requests counted, want %d", total, 8*2000)
	}
}
