package targetgroup

import (
	"testing"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// What the tests of package targetgroup_test use of the package's
// internals. Those tests drive the admin API, and adminapi imports this
// package, so they can't be inside it.

// Use makes r the live registry, the one the admin API answers for, and
// returns what undoes it.
func Use(r *Registry) (undo func()) {
	current.Store(r)
	return func() { current.CompareAndSwap(r, nil) }
}

var AdminFixture = adminFixture

// ScaleTargets is how many targets the scale benchmarks register.
const ScaleTargets = 10000

// ScaleRegistry is a registry with one API group "web" (health checks every
// 30s, not started) whose quota admits twice ScaleTargets; with storage, its
// records go to a file system storage in a temporary directory, as Caddy's
// default storage would.
func ScaleRegistry(tb testing.TB, storage bool) (*Registry, *Group) {
	tb.Helper()
	r := newRegistry(zap.NewNop())
	limits := Limits{MaxTargetsPerGroup: 2 * ScaleTargets}.withDefaults()
	r.limits.Store(&limits)
	if storage {
		var st certmagic.Storage = &certmagic.FileStorage{Path: tb.TempDir()}
		r.store.Store(&st)
	}
	spec, err := NewSpec(&GroupConfig{Port: 80, HealthCheck: &HealthCheckConfig{Path: "/health"}}, r.Allowed())
	if err != nil {
		tb.Fatal(err)
	}
	g := newGroup(r, "web", spec, SourceAPI)
	m := map[string]*Group{"web": g}
	r.groups.Store(&m)
	r.fleet.setNode("bench")
	r.firstSync()
	return r, g
}

// MarkHealthy puts every registered target in service, as passed health
// checks would, so that the snapshot (the request path's view) holds them.
func MarkHealthy(g *Group) {
	g.lock()
	for _, t := range g.targets {
		t.threshold.Observe(true, 1, 1)
		g.setState(t, StateHealthy, "", "")
	}
	g.publish()
	g.pending = nil // nobody listens; don't queue 20,000 events
	g.unlock()
}

// Fingerprint is everything the admin API can change, in a comparable form.
func Fingerprint(t *testing.T, r *Registry) string { return fingerprint(t, r) }
