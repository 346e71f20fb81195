package targetgroup_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup/adminapi"
)

// Scale benchmarks of the admin API and the registry: 10,000 targets in one
// group. Goals (issue 7): 10,000 registrations in under 1 s, under 2 KiB of
// memory per registered target.
//
//	go test ./targetgroup -run '^$' -bench . -benchtime 3x

const scaleTargets = targetgroup.ScaleTargets

// scaleTarget is the i-th of 10,000 distinct private addresses on port 80.
func scaleTarget(i int) targetgroup.TargetConfig {
	return targetgroup.TargetConfig{ID: fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff), Port: 80}
}

// batches splits the 10,000 targets into RegisterTargets calls of size n.
func batches(n int) [][]targetgroup.TargetConfig {
	var out [][]targetgroup.TargetConfig
	for lo := 0; lo < scaleTargets; lo += n {
		batch := make([]targetgroup.TargetConfig, 0, n)
		for i := lo; i < min(lo+n, scaleTargets); i++ {
			batch = append(batch, scaleTarget(i))
		}
		out = append(out, batch)
	}
	return out
}

// BenchmarkRegisterTargets registers 10,000 targets into an empty group in
// batches; one op is all 10,000. "registry" calls Registry.RegisterTargets
// without storage; "api" posts JSON bodies to the admin handler with a file
// system storage, which is what a registration costs through Caddy's admin
// endpoint (each answer describes the targets of its call).
func BenchmarkRegisterTargets(b *testing.B) {
	for _, path := range []string{"registry", "api"} {
		for _, size := range []int{100, 1000} {
			b.Run(fmt.Sprintf("%s/batch=%d", path, size), func(b *testing.B) {
				bs := batches(size)
				bodies := make([][]byte, len(bs))
				for i, batch := range bs {
					bodies[i], _ = json.Marshal(adminapi.TargetsRequest{Targets: batch})
				}
				var total time.Duration
				for b.Loop() {
					b.StopTimer()
					r, g := targetgroup.ScaleRegistry(b, path == "api")
					b.StartTimer()
					start := time.Now()
					for i := range bs {
						if path == "registry" {
							if _, err := r.RegisterTargets("web", bs[i]); err != nil {
								b.Fatal(err)
							}
							continue
						}
						if w := serveAdmin(b, r, http.MethodPost, "/target-groups/web/targets", bodies[i]); w.Code != http.StatusOK {
							b.Fatalf("batch %d: status %d: %s", i, w.Code, w.Body.Bytes())
						}
					}
					total += time.Since(start)
					b.StopTimer()
					if n := g.Snapshot().Initial; n != scaleTargets {
						b.Fatalf("%d targets registered, want %d", n, scaleTargets)
					}
					_ = r.Destruct()
					b.StartTimer()
				}
				b.ReportMetric(float64(scaleTargets*b.N)/total.Seconds(), "targets/s")
				b.ReportMetric(total.Seconds()/float64(b.N), "s/10k")
			})
		}
	}
}

// BenchmarkDescribeTargetHealth describes the health of 10,000 healthy
// targets: "registry" builds the descriptions, "api" answers
// GET /target-groups/web/targets (JSON included).
func BenchmarkDescribeTargetHealth(b *testing.B) {
	r, g := targetgroup.ScaleRegistry(b, false)
	defer r.Destruct()
	for _, batch := range batches(1000) {
		if _, err := r.RegisterTargets("web", batch); err != nil {
			b.Fatal(err)
		}
	}
	targetgroup.MarkHealthy(g)
	b.Run("registry", func(b *testing.B) {
		for b.Loop() {
			if d := g.DescribeTargetHealth(); len(d) != scaleTargets {
				b.Fatalf("%d descriptions", len(d))
			}
		}
	})
	b.Run("api", func(b *testing.B) {
		var size int
		for b.Loop() {
			w := serveAdmin(b, r, http.MethodGet, "/target-groups/web/targets", nil)
			if w.Code != http.StatusOK {
				b.Fatalf("status %d", w.Code)
			}
			size = w.Body.Len()
		}
		b.ReportMetric(float64(size), "bytes/answer")
	})
}

// BenchmarkMemoryPerTarget measures the live heap a registered target costs:
// its state, its health check job, its place in the group's maps and, once
// healthy, in the request path's snapshot. One op registers 10,000 targets
// in batches of 1,000 into a fresh registry (no storage).
func BenchmarkMemoryPerTarget(b *testing.B) {
	var registered, healthy float64
	for b.Loop() {
		b.StopTimer()
		r, g := targetgroup.ScaleRegistry(b, false)
		bs := batches(1000)
		before := liveHeap()
		b.StartTimer()
		for _, batch := range bs {
			if _, err := r.RegisterTargets("web", batch); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		afterRegister := liveHeap()
		targetgroup.MarkHealthy(g)
		afterHealthy := liveHeap()
		if s := g.Snapshot(); len(s.Routable) != scaleTargets {
			b.Fatalf("%d routable", len(s.Routable))
		}
		registered += float64(afterRegister-before) / scaleTargets
		healthy += float64(afterHealthy-before) / scaleTargets
		runtime.KeepAlive(bs)
		_ = r.Destruct()
		b.StartTimer()
	}
	b.ReportMetric(registered/float64(b.N), "B/target")
	b.ReportMetric(healthy/float64(b.N), "B/healthy-target")
}

// liveHeap is the heap in use after two collections.
func liveHeap() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestScaleSmoke keeps the benchmarks' set-up honest in ordinary test runs:
// a few hundred targets through the same paths.
func TestScaleSmoke(t *testing.T) {
	r, g := targetgroup.ScaleRegistry(t, true)
	defer r.Destruct()
	for i := range 3 {
		var batch []targetgroup.TargetConfig
		for j := range 100 {
			batch = append(batch, scaleTarget(i*100+j))
		}
		body, _ := json.Marshal(adminapi.TargetsRequest{Targets: batch})
		if w := serveAdmin(t, r, http.MethodPost, "/target-groups/web/targets", body); w.Code != http.StatusOK {
			t.Fatalf("status %d: %s", w.Code, w.Body.Bytes())
		}
	}
	targetgroup.MarkHealthy(g)
	var out struct {
		Targets []targetgroup.TargetHealthDescription `json:"targets"`
	}
	w := serveAdmin(t, r, http.MethodGet, "/target-groups/web/targets", nil)
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || len(out.Targets) != 300 {
		t.Fatalf("describe: %v, %d targets", err, len(out.Targets))
	}
	for _, d := range out.Targets {
		if d.TargetHealth.State != targetgroup.StateHealthy {
			t.Fatalf("%s:%s is %s", d.Target.ID, strconv.Itoa(d.Target.Port), d.TargetHealth.State)
		}
	}
}
