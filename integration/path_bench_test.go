package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// BenchmarkRequestPath measures what a request through the target_group
// handler costs the plugin before reverse_proxy dials: the handler's group
// lookup, GetUpstreams, Select (with its in-flight lease and, for
// lb_cookie, the cookies) and the end of the lease at the end of the
// request, for each algorithm and group size — next to Caddy's
// own round robin over a static pool of the same size, which needs neither.
func BenchmarkRequestPath(b *testing.B) {
	for _, algo := range []string{"round_robin", "least_outstanding_requests", "weighted_random", "lb_cookie"} {
		for _, n := range []int{10, 100, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d", algo, n), func(b *testing.B) {
				reg := benchGroup(b, algo, n)
				src := &UpstreamSource{Group: "bench", reg: reg}
				pol := &SelectionPolicy{Group: "bench", reg: reg}
				base := caddyhttp.PrepareRequest(httptest.NewRequest("GET", "/", nil), caddy.NewReplacer(), nil, &caddyhttp.Server{})
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					// A request of its own (vars, cancellable context) is the
					// server's cost, not the plugin's: see request_setup.
					ctx, cancel := context.WithCancel(context.WithValue(base.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
					r := base.WithContext(ctx)
					at := newAttempt(r, reg.Group("bench"))
					ups, err := src.GetUpstreams(r)
					if err != nil {
						b.Fatal(err)
					}
					for _, u := range ups {
						u.Host = new(reverseproxy.Host)
					}
					var w http.ResponseWriter
					if algo == "lb_cookie" {
						w = httptest.NewRecorder()
					}
					if pol.Select(ups, r, w) == nil {
						b.Fatal("no upstream")
					}
					// What the request's end runs (here at once, so that the
					// lease is over before the next request), then its end.
					at.end(r)
					cancel()
				}
			})
		}
	}
	b.Run("request_setup", func(b *testing.B) {
		base := caddyhttp.PrepareRequest(httptest.NewRequest("GET", "/", nil), caddy.NewReplacer(), nil, &caddyhttp.Server{})
		b.ReportAllocs()
		for range b.N {
			ctx, cancel := context.WithCancel(context.WithValue(base.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
			_ = base.WithContext(ctx)
			cancel()
		}
	})
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("caddy_round_robin/n=%d", n), func(b *testing.B) {
			pool := make(reverseproxy.UpstreamPool, n)
			for i := range pool {
				pool[i] = &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: fmt.Sprintf("10.0.%d.%d:80", i/256, i%256)}
			}
			p := new(reverseproxy.RoundRobinSelection)
			r := httptest.NewRequest("GET", "/", nil)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if p.Select(pool, r, nil) == nil {
					b.Fatal("no upstream")
				}
			}
		})
	}
}

// benchGroup loads a config with one group of n targets whose health checks
// are off (so they are all routable at once).
func benchGroup(b testing.TB, algo string, n int) *targetgroup.Registry {
	b.Helper()
	attrs := fmt.Sprintf(`"load_balancing.algorithm.type": %q`, algo)
	if algo == "lb_cookie" {
		attrs = `"stickiness.enabled": "true"`
	}
	cfg := fmt.Sprintf(`{"admin": {"disabled": true}, "storage": {"module": "file_system", "root": %q},
		"apps": {"target_groups": {"max_targets_per_group": 10000, "groups": {"bench": {"health_check": {"enabled": false}, "attributes": {%s}}}}}}`, b.TempDir(), attrs)
	if err := caddy.Load([]byte(cfg), true); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = caddy.Stop() })
	reg := targetgroup.Current()
	ts := make([]targetgroup.TargetConfig, n)
	for i := range ts {
		ts[i] = targetgroup.TargetConfig{ID: fmt.Sprintf("10.0.%d.%d", i/256, i%256), Port: 80}
	}
	if _, err := reg.RegisterTargets("bench", ts); err != nil {
		b.Fatal(err)
	}
	return reg
}
