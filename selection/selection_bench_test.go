package selection

import (
	"fmt"
	"hash/maphash"
	"sync/atomic"
	"testing"
	"time"
)

var benchSizes = []int{10, 100, 1000, 10000}

// sink keeps results alive so the compiler cannot drop the work.
var sink int

// benchPool is what a caller has per snapshot: availability, in-flight
// counts, ids.
type benchPool struct {
	up       []bool
	inflight []atomic.Int64
	ids      []string
}

func newBenchPool(n int) *benchPool {
	p := &benchPool{up: make([]bool, n), inflight: make([]atomic.Int64, n), ids: make([]string, n)}
	for i := range n {
		p.up[i] = true
		p.inflight[i].Store(int64(i*7919) % 13)
		p.ids[i] = fmt.Sprintf("10.0.%d.%d:80", i/250, i%250)
	}
	return p
}

func eachSize(b *testing.B, f func(b *testing.B, n int, p *benchPool)) {
	for _, n := range benchSizes {
		p := newBenchPool(n)
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			f(b, n, p)
		})
	}
}

func BenchmarkRoundRobin(b *testing.B) {
	eachSize(b, func(b *testing.B, n int, p *benchPool) {
		var cursor atomic.Uint64
		ok := func(i int) bool { return p.up[i] }
		for b.Loop() {
			sink = RoundRobin(n, cursor.Add(1)-1, ok)
		}
	})
}

func BenchmarkLeastOutstanding(b *testing.B) {
	eachSize(b, func(b *testing.B, n int, p *benchPool) {
		var cursor atomic.Uint64
		ok := func(i int) bool { return p.up[i] }
		inflight := func(i int) int64 { return p.inflight[i].Load() }
		for b.Loop() {
			sink = LeastOutstanding(n, cursor.Add(1)-1, inflight, ok)
		}
	})
}

func BenchmarkPick(b *testing.B) {
	eachSize(b, func(b *testing.B, n int, p *benchPool) {
		w := make([]float64, n)
		for i := range w {
			w[i] = float64(1 + i%5)
		}
		ws := NewWeights(w)
		ok := func(i int) bool { return p.up[i] }
		for b.Loop() {
			sink = ws.Pick(Uniform(), ok)
		}
	})
}

// BenchmarkPickFallback is the rare path: the picked candidate is out, here
// one in two (the odd ones), so half the picks take the O(n) way.
func BenchmarkPickFallback(b *testing.B) {
	eachSize(b, func(b *testing.B, n int, p *benchPool) {
		w := make([]float64, n)
		for i := range w {
			w[i] = 1
		}
		ws := NewWeights(w)
		ok := func(i int) bool { return i%2 == 0 }
		for b.Loop() {
			sink = ws.Pick(Uniform(), ok)
		}
	})
}

// BenchmarkRoundRobinSlowStart is round robin where one target in ten is
// half way through its slow start.
func BenchmarkRoundRobinSlowStart(b *testing.B) {
	eachSize(b, func(b *testing.B, n int, p *benchPool) {
		now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
		since := make([]time.Time, n)
		for i := range since {
			since[i] = now.Add(-time.Hour)
			if i%10 == 0 {
				since[i] = now.Add(-50 * time.Second)
			}
		}
		var cursor atomic.Uint64
		next := func() uint64 { return cursor.Add(1) - 1 }
		factor := func(i int) float64 { return SlowStartFactor(now, since[i], 100*time.Second) }
		ok := func(i int) bool { return p.up[i] }
		for b.Loop() {
			sink = RoundRobinRamp(n, next, factor, ok, Uniform)
		}
	})
}

func BenchmarkAcceptRR(b *testing.B) {
	b.ReportAllocs()
	acc := 0
	for b.Loop() {
		if AcceptRR(0.5, Uniform()) {
			acc++
		}
	}
	sink = acc
}

func BenchmarkSlowStartFactor(b *testing.B) {
	b.ReportAllocs()
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	since := now.Add(-50 * time.Second)
	f := 0.0
	for b.Loop() {
		f += SlowStartFactor(now, since, 100*time.Second)
	}
	sink = int(f)
}

func BenchmarkRendezvous(b *testing.B) {
	eachSize(b, func(b *testing.B, n int, p *benchPool) {
		seed := maphash.MakeSeed()
		ok := func(i int) bool { return p.up[i] }
		id := func(i int) string { return p.ids[i] }
		for b.Loop() {
			sink = Rendezvous(seed, "198.51.100.7", n, id, ok)
		}
	})
}

func BenchmarkUniform(b *testing.B) {
	b.ReportAllocs()
	f := 0.0
	for b.Loop() {
		f += Uniform()
	}
	sink = int(f)
}

func BenchmarkUniformParallel(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		f := 0.0
		for pb.Next() {
			f += Uniform()
		}
		sink = int(f)
	})
}

func BenchmarkSeal(b *testing.B) {
	b.ReportAllocs()
	kr := mustRing(b, fixedKey(1, t0))
	for b.Loop() {
		if _, err := kr.Seal(sticky); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	b.ReportAllocs()
	kr := mustRing(b, fixedKey(1, t0), fixedKey(2, t0.Add(time.Hour)), fixedKey(3, t0.Add(2*time.Hour)))
	v := mustSeal(b, kr, sticky)
	for b.Loop() {
		if _, err := kr.Open(v, sticky.Group, t0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenRejectOtherGroup is the cost of a cookie of another group,
// which ends at the tag, before any decryption.
func BenchmarkOpenRejectOtherGroup(b *testing.B) {
	b.ReportAllocs()
	kr := mustRing(b, fixedKey(1, t0))
	v := mustSeal(b, kr, sticky)
	for b.Loop() {
		if _, err := kr.Open(v, "web-staging", t0); err == nil {
			b.Fatal("opened")
		}
	}
}

// BenchmarkSticky is the request path of lb_cookie: open the cookie, find
// its target among n, check it is still acceptable.
func BenchmarkSticky(b *testing.B) {
	eachSize(b, func(b *testing.B, n int, p *benchPool) {
		kr := mustRing(b, fixedKey(1, t0))
		index := make(map[string]int, n)
		for i, id := range p.ids {
			index[id] = i
		}
		values := make([]string, 64)
		for k := range values {
			values[k] = mustSeal(b, kr, Sticky{Group: "web-prod", ID: p.ids[k*n/len(values)], Port: 80, Expires: t0.Add(time.Hour)})
		}
		k := 0
		for b.Loop() {
			s, err := kr.Open(values[k%len(values)], "web-prod", t0)
			k++
			if err != nil {
				b.Fatal(err)
			}
			if i, found := index[s.ID]; found && p.up[i] {
				sink = i
			}
		}
	})
}

func BenchmarkObserveParallel(b *testing.B) {
	b.ReportAllocs()
	st := new(Stats)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			st.Observe(time.Millisecond, false)
		}
	})
}

func BenchmarkMitigate(b *testing.B) {
	eachSize(b, func(b *testing.B, n int, _ *benchPool) {
		pool := newPool(n)
		for i, st := range pool {
			feed(st, 100, i%7, time.Duration(10+i%5)*time.Millisecond)
		}
		// The same instant every time: no decay, so every target stays
		// eligible and each call does the whole computation.
		Mitigate(pool, t0)
		for b.Loop() {
			Mitigate(pool, t0)
		}
	})
}
