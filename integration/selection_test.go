package integration_test

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync"
	"testing"
	"time"
)

// groupConfig proxies every request to group "web", of the given
// attributes (JSON members), through the target_group handler.
func groupConfig(attrs string) string {
	return caddyConfig{
		groups: map[string]any{"web": `{"health_check": {"interval": "5s", "timeout": "2s"}, "attributes": {` + attrs + `}}`},
		routes: []any{route("", tgHandler("web"))},
	}.json()
}

func registerHealthy(t *testing.T, in *instance, bs ...*backend) {
	t.Helper()
	ports := make([]int, len(bs))
	want := map[string]string{}
	for i, b := range bs {
		ports[i] = b.port()
		want[fmt.Sprintf("127.0.0.1:%d", b.port())] = "healthy"
	}
	in.register("web", ports...)
	in.waitStates("web", want)
}

func TestStickyLBCookie(t *testing.T) {
	a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
	in := startCaddy(t, groupConfig(`"stickiness.enabled": "true", "stickiness.type": "lb_cookie", "stickiness.lb_cookie.duration_seconds": "3600"`))
	registerHealthy(t, in, a, b, c)

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	get := func() (string, *http.Response) {
		t.Helper()
		resp, err := client.Get("http://" + in.http + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(body), resp
	}
	first, resp := get()
	var lb, cors *http.Cookie
	for _, ck := range resp.Cookies() {
		switch ck.Name {
		case "AWSALB":
			lb = ck
		case "AWSALBCORS":
			cors = ck
		}
	}
	if lb == nil || cors == nil {
		t.Fatalf("cookies %v, want AWSALB and AWSALBCORS", resp.Header.Values("Set-Cookie"))
	}
	if n := len(resp.Header.Values("Set-Cookie")); n != 2 {
		t.Fatalf("%d Set-Cookie headers, want 2: %v", n, resp.Header.Values("Set-Cookie"))
	}
	raw := strings.Join(resp.Header.Values("Set-Cookie"), "\n")
	if !strings.Contains(raw, "Expires=") || strings.Contains(raw, "Max-Age") {
		t.Fatalf("cookies must use Expires, not Max-Age: %s", raw)
	}
	if cors.SameSite != http.SameSiteNoneMode || !cors.Secure {
		t.Fatalf("AWSALBCORS is not SameSite=None; Secure: %s", raw)
	}
	if d := time.Until(lb.Expires); d < 59*time.Minute || d > 61*time.Minute {
		t.Fatalf("cookie expires in %s, want 1h", d)
	}
	if strings.Contains(lb.Value, "127.0.0.1") || strings.Contains(lb.Value, "%") {
		t.Fatalf("cookie value %q is not an opaque, unencoded value", lb.Value)
	}

	// The cookie jar sticks to one target across 50 requests.
	for i := 0; i < 50; i++ {
		if got, _ := get(); got != first {
			t.Fatalf("request %d went to %s, not %s", i, got, first)
		}
	}

	// A tampered cookie is ignored: the algorithm picks, and a new cookie is set.
	tampered := []byte(lb.Value)
	tampered[len(tampered)/2] ^= 1
	req, _ := http.NewRequest("GET", "http://"+in.http+"/", nil)
	req.AddCookie(&http.Cookie{Name: "AWSALB", Value: string(tampered)})
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if len(resp2.Cookies()) != 2 || resp2.Cookies()[0].Value == string(tampered) {
		t.Fatalf("a tampered cookie was not replaced: %v", resp2.Header.Values("Set-Cookie"))
	}

	// Deregistering the sticky target moves the client, with a new cookie.
	port := map[string]int{"a": a.port(), "b": b.port(), "c": c.port()}[first]
	in.mustAPI("POST", "/target-groups/web/targets/deregister", targets(port), nil)
	moved, _ := get()
	if moved == first {
		t.Fatalf("still sent to deregistered %s", first)
	}
	for i := 0; i < 10; i++ {
		if got, _ := get(); got != moved {
			t.Fatalf("after the move, request %d went to %s, not %s", i, got, moved)
		}
	}
}

func TestStickyAppCookie(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	in := startCaddy(t, groupConfig(`"stickiness.enabled": "true", "stickiness.type": "app_cookie", "stickiness.app_cookie.cookie_name": "SESSION"`))
	registerHealthy(t, in, a, b)
	do := func(cookies ...*http.Cookie) (string, *http.Response) {
		req, _ := http.NewRequest("GET", "http://"+in.http+"/", nil)
		for _, c := range cookies {
			req.AddCookie(c)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(body), resp
	}
	first, resp := do()
	var lb *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "AWSALBAPP-0" {
			lb = c
		}
	}
	if lb == nil {
		t.Fatalf("no AWSALBAPP-0 cookie: %v", resp.Header.Values("Set-Cookie"))
	}
	session := &http.Cookie{Name: "SESSION", Value: "s1"}
	for i := 0; i < 20; i++ {
		if got, _ := do(session, lb); got != first {
			t.Fatalf("with the application cookie, request %d went to %s, not %s", i, got, first)
		}
	}
	// Without the application cookie, stickiness ends: round robin again.
	seen := map[string]bool{}
	for i := 0; i < 4; i++ {
		got, _ := do(lb)
		seen[got] = true
	}
	if len(seen) != 2 {
		t.Fatalf("without the application cookie requests went only to %v", seen)
	}
}

// TestLeastOutstandingPrefersTheFastTarget: with one slow and one fast
// backend under 8 concurrent clients, least outstanding requests sends most
// traffic to the fast one, where round robin would split it evenly.
func TestLeastOutstandingPrefersTheFastTarget(t *testing.T) {
	fast, slow := newBackend(t, "fast"), newBackend(t, "slow")
	in := startCaddy(t, groupConfig(`"load_balancing.algorithm.type": "least_outstanding_requests"`))
	registerHealthy(t, in, fast, slow)
	slow.delay.Store(int64(200 * time.Millisecond))
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]int{}
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				// The slow backend takes 200ms per request, the fast one 5ms.
				resp, err := http.Get("http://" + in.http + "/?sleep=5ms")
				if err != nil {
					t.Error(err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				got[string(body)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if got["fast"] < 3*got["slow"] {
		t.Fatalf("fast %d, slow %d: least outstanding requests should favour the fast target", got["fast"], got["slow"])
	}
}

// TestWeightedRandomFollowsWeights: weights 1 and 3 split 2,000 requests
// 25 % / 75 %. The count of the light target is binomial (n=2000, p=0.25,
// σ≈19.4); 5σ is a bound a correct implementation breaks about once in
// 1.7 million runs.
func TestWeightedRandomFollowsWeights(t *testing.T) {
	light, heavy := newBackend(t, "light"), newBackend(t, "heavy")
	in := startCaddy(t, groupConfig(`"load_balancing.algorithm.type": "weighted_random"`))
	body := fmt.Sprintf(`{"targets":[{"id":"127.0.0.1","port":%d,"weight":1},{"id":"127.0.0.1","port":%d,"weight":3}]}`, light.port(), heavy.port())
	in.mustAPI("POST", "/target-groups/web/targets", body, nil)
	in.waitStates("web", map[string]string{fmt.Sprintf("127.0.0.1:%d", light.port()): "healthy", fmt.Sprintf("127.0.0.1:%d", heavy.port()): "healthy"})
	const n = 2000
	got := spread(t, in, n, light, heavy)
	sigma := math.Sqrt(n * 0.25 * 0.75)
	if d := math.Abs(float64(got["light"]) - n*0.25); d > 5*sigma {
		t.Fatalf("light got %d of %d, want %d ± %.0f", got["light"], n, n/4, 5*sigma)
	}
}

// TestLargeGroupSpreadsAndSticks covers groups larger than the few upstreams
// the source hands reverse_proxy per request: round robin still reaches
// every target evenly, and a sticky cookie still pins any of them.
func TestLargeGroupSpreadsAndSticks(t *testing.T) {
	var bs []*backend
	for i := 0; i < 20; i++ {
		bs = append(bs, newBackend(t, fmt.Sprintf("b%02d", i)))
	}
	in := startCaddy(t, groupConfig(`"stickiness.enabled": "false"`))
	registerHealthy(t, in, bs...)
	got := spread(t, in, 400, bs...)
	for _, b := range bs {
		if got[b.name] != 20 {
			t.Fatalf("round robin over 20 targets: %v", got)
		}
	}

	// Turn stickiness on with a reload: the registrations stay.
	if err := in.load(groupConfig(`"stickiness.enabled": "true"`)); err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	var first string
	for i := 0; i < 30; i++ {
		resp, err := client.Get("http://" + in.http + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if i == 0 {
			first = string(body)
		} else if string(body) != first {
			t.Fatalf("request %d went to %s, not %s", i, body, first)
		}
	}
}

// TestAnomalyMitigation: under weighted_random with anomaly mitigation, a
// target that fails most requests is detected and its share lowered, while
// it stays healthy for its health checks.
func TestAnomalyMitigation(t *testing.T) {
	bs := []*backend{newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c"), newBackend(t, "bad")}
	in := startCaddy(t, groupConfig(`"load_balancing.algorithm.type": "weighted_random", "load_balancing.algorithm.anomaly_mitigation": "on"`))
	registerHealthy(t, in, bs...)
	bad := bs[3]
	bad.failing.Store(true)
	mitigated := func() bool {
		var h struct {
			Targets []struct {
				Target           struct{ Port int }
				AnomalyDetection struct {
					Result             string `json:"result"`
					MitigationInEffect string `json:"mitigation_in_effect"`
				} `json:"anomaly_detection"`
			} `json:"targets"`
		}
		in.mustAPI("GET", "/target-groups/web/targets", nil, &h)
		for _, e := range h.Targets {
			if e.Target.Port == bad.port() {
				return e.AnomalyDetection.Result == "anomalous" && e.AnomalyDetection.MitigationInEffect == "yes"
			}
		}
		return false
	}
	// The detector needs about 50 requests per target in its window and
	// runs every 5 s.
	waitFor(t, "the failing target to be mitigated", 40*time.Second, func() bool {
		for i := 0; i < 50; i++ {
			resp, err := http.Get("http://" + in.http + "/")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
		return mitigated()
	})
	// Its weight is now at most half, at best a tenth: of 400 requests it
	// gets about 3 % (0.1 of 3.1); 10 % is more than 7 binomial standard
	// deviations above that, and a quarter is what it had before.
	for _, b := range bs {
		b.hits.Store(0)
	}
	for i := 0; i < 400; i++ {
		resp, err := http.Get("http://" + in.http + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := bad.hits.Load(); n > 40 {
		t.Fatalf("the mitigated target still got %d of 400 requests", n)
	}
	if st := in.states("web")[fmt.Sprintf("127.0.0.1:%d", bad.port())]; st != "healthy" {
		t.Fatalf("the anomalous target is %s; mitigation must not change its health", st)
	}
}
