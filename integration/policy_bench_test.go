package integration_test

// Caddy's own selection policies against the pure functions of package
// selection doing the same pick over the same pool: the same
// reverseproxy.UpstreamPool, the same Available() test, the same in-flight
// counts. Sub-benchmarks are <policy>/<caddy|ours>/n=<pool size>.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
)

var policyBenchSizes = []int{10, 100, 1000, 10000}

// policyBenchSink keeps results alive so that no pick is optimised away.
var policyBenchSink atomic.Pointer[reverseproxy.Upstream]

func policyBenchPool(n int) reverseproxy.UpstreamPool {
	pool := make(reverseproxy.UpstreamPool, n)
	for i := range pool {
		pool[i] = &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: fmt.Sprintf("10.0.%d.%d:80", i/250, i%250)}
	}
	return pool
}

// policyBench runs caddy and ours on pools of every size.
func policyBench(b *testing.B, caddyPick, oursPick func(b *testing.B, pool reverseproxy.UpstreamPool) func() *reverseproxy.Upstream) {
	for _, side := range []struct {
		name string
		pick func(b *testing.B, pool reverseproxy.UpstreamPool) func() *reverseproxy.Upstream
	}{{"caddy", caddyPick}, {"ours", oursPick}} {
		for _, n := range policyBenchSizes {
			pool := policyBenchPool(n)
			b.Run(fmt.Sprintf("%s/n=%d", side.name, n), func(b *testing.B) {
				pick := side.pick(b, pool)
				b.ReportAllocs()
				var last *reverseproxy.Upstream
				for b.Loop() {
					last = pick()
				}
				if last == nil {
					b.Fatal("no upstream picked")
				}
				policyBenchSink.Store(last)
			})
		}
	}
}

func BenchmarkPolicyRoundRobin(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	policyBench(b,
		func(_ *testing.B, pool reverseproxy.UpstreamPool) func() *reverseproxy.Upstream {
			p := new(reverseproxy.RoundRobinSelection)
			return func() *reverseproxy.Upstream { return p.Select(pool, req, nil) }
		},
		func(_ *testing.B, pool reverseproxy.UpstreamPool) func() *reverseproxy.Upstream {
			var cursor atomic.Uint64
			ok := func(i int) bool { return pool[i].Available() }
			return func() *reverseproxy.Upstream {
				if i := selection.RoundRobin(len(pool), cursor.Add(1)-1, ok); i >= 0 {
					return pool[i]
				}
				return nil
			}
		})
}

// Every host has no request in flight (Host's counter is Caddy's own), so
// all tie: Caddy breaks ties by reservoir sampling, ours by the cursor.
func BenchmarkPolicyLeastConn(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	policyBench(b,
		func(_ *testing.B, pool reverseproxy.UpstreamPool) func() *reverseproxy.Upstream {
			var p reverseproxy.LeastConnSelection
			return func() *reverseproxy.Upstream { return p.Select(pool, req, nil) }
		},
		func(_ *testing.B, pool reverseproxy.UpstreamPool) func() *reverseproxy.Upstream {
			var cursor atomic.Uint64
			ok := func(i int) bool { return pool[i].Available() }
			inflight := func(i int) int64 { return int64(pool[i].NumRequests()) }
			return func() *reverseproxy.Upstream {
				if i := selection.LeastOutstanding(len(pool), cursor.Add(1)-1, inflight, ok); i >= 0 {
					return pool[i]
				}
				return nil
			}
		})
}

// Caddy's random against our weighted random with equal weights (the
// Weights are built once per snapshot, outside the loop, as a caller
// would).
func BenchmarkPolicyRandomPick(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	policyBench(b,
		func(_ *testing.B, pool reverseproxy.UpstreamPool) func() *reverseproxy.Upstream {
			var p reverseproxy.RandomSelection
			return func() *reverseproxy.Upstream { return p.Select(pool, req, nil) }
		},
		func(_ *testing.B, pool reverseproxy.UpstreamPool) func() *reverseproxy.Upstream {
			w := make([]float64, len(pool))
			for i := range w {
				w[i] = 1
			}
			ws := selection.NewWeights(w)
			ok := func(i int) bool { return pool[i].Available() }
			return func() *reverseproxy.Upstream {
				if i := ws.Pick(selection.Uniform(), ok); i >= 0 {
					return pool[i]
				}
				return nil
			}
		})
}

// Caddy's ip_hash is rendezvous hashing too (xxhash of dial+ip per host).
func BenchmarkPolicyIPHashRendezvous(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "198.51.100.7:51234"
	policyBench(b,
		func(_ *testing.B, pool reverseproxy.UpstreamPool) func() *reverseproxy.Upstream {
			var p reverseproxy.IPHashSelection
			return func() *reverseproxy.Upstream { return p.Select(pool, req, nil) }
		},
		func(_ *testing.B, pool reverseproxy.UpstreamPool) func() *reverseproxy.Upstream {
			seed := maphash.MakeSeed()
			ok := func(i int) bool { return pool[i].Available() }
			id := func(i int) string { return pool[i].Dial }
			return func() *reverseproxy.Upstream {
				if i := selection.Rendezvous(seed, "198.51.100.7", len(pool), id, ok); i >= 0 {
					return pool[i]
				}
				return nil
			}
		})
}

// policyBenchCookies is how many clients, stuck to targets spread evenly
// over the pool, the cookie benchmarks cycle through: Caddy's cost depends
// on the target's position, so one fixed target would mislead.
const policyBenchCookies = 64

// Requests that carry a cookie for a live target: Caddy hashes the dial
// address of each host in turn until one matches (HMAC-SHA256, hex), ours
// opens the AEAD cookie and looks the target up in a map built once per
// snapshot.
func BenchmarkPolicyCookie(b *testing.B) {
	policyBench(b,
		func(b *testing.B, pool reverseproxy.UpstreamPool) func() *reverseproxy.Upstream {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			b.Cleanup(cancel)
			p := reverseproxy.CookieHashSelection{Secret: "hunter2"}
			if err := p.Provision(ctx); err != nil {
				b.Fatal(err)
			}
			reqs := make([]*http.Request, policyBenchCookies)
			for k := range reqs {
				want := pool[k*len(pool)/len(reqs)]
				// Caddy's cookie value: hex HMAC-SHA256 of the dial address.
				mac := hmac.New(sha256.New, []byte(p.Secret))
				mac.Write([]byte(want.Dial))
				reqs[k] = httptest.NewRequest(http.MethodGet, "/", nil)
				reqs[k].AddCookie(&http.Cookie{Name: "lb", Value: hex.EncodeToString(mac.Sum(nil))})
				if got := p.Select(pool, reqs[k], httptest.NewRecorder()); got != want {
					b.Fatalf("cookie for %s selected %v", want.Dial, got)
				}
			}
			w := httptest.NewRecorder()
			k := 0
			return func() *reverseproxy.Upstream {
				k++
				return p.Select(pool, reqs[k%len(reqs)], w)
			}
		},
		func(b *testing.B, pool reverseproxy.UpstreamPool) func() *reverseproxy.Upstream {
			now := time.Now()
			key, err := selection.NewKey(1, now)
			if err != nil {
				b.Fatal(err)
			}
			kr, err := selection.NewKeyring([]selection.Key{key})
			if err != nil {
				b.Fatal(err)
			}
			index := make(map[string]int, len(pool))
			for i, u := range pool {
				index[u.Dial] = i
			}
			reqs := make([]*http.Request, policyBenchCookies)
			for k := range reqs {
				v, err := kr.Seal(selection.Sticky{Group: "web", ID: pool[k*len(pool)/len(reqs)].Dial, Port: 80, Expires: now.Add(time.Hour)})
				if err != nil {
					b.Fatal(err)
				}
				reqs[k] = httptest.NewRequest(http.MethodGet, "/", nil)
				reqs[k].AddCookie(&http.Cookie{Name: "AWSALB", Value: v})
			}
			k := 0
			return func() *reverseproxy.Upstream {
				r := reqs[k%len(reqs)]
				k++
				c, err := r.Cookie("AWSALB")
				if err != nil {
					return nil
				}
				s, err := kr.Open(c.Value, "web", now)
				if err != nil {
					return nil
				}
				if i, found := index[s.ID]; found && pool[i].Available() {
					return pool[i]
				}
				return nil
			}
		})
}
