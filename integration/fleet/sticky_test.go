package fleet_test

import (
	"net/http"
	"testing"
	"time"
)

// TestFleetStickyCookie: an lb_cookie (AWSALB) issued by any node is
// honoured by every other node: they send the request to the target the
// cookie names.
func TestFleetStickyCookie(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOptions{web: webGroup(map[string]string{
		"stickiness.enabled": "true", "stickiness.type": "lb_cookie", "stickiness.lb_cookie.duration_seconds": "3600",
	})})
	bs := newBackends(t, "b", 3)
	f.nodes[0].register("web", portsOf(bs...)...)
	waitAll(t, f.nodes, 20*time.Second, "the targets healthy", onTargets("web", healthy(portsOf(bs...)...)))

	client := &http.Client{Timeout: 5 * time.Second}
	pinned := map[string]int{}
	for _, issuer := range f.nodes {
		// A few cookies per issuer, so that they name different targets.
		for range pick(3, 10) {
			code, target, resp := issuer.get(client)
			if code != 200 {
				t.Fatalf("%s: GET / answered %d %q", issuer.id, code, target)
			}
			var cookie *http.Cookie
			for _, c := range resp.Cookies() {
				if c.Name == "AWSALB" {
					cookie = c
				}
			}
			if cookie == nil {
				t.Fatalf("%s set no AWSALB cookie: %v", issuer.id, resp.Header.Values("Set-Cookie"))
			}
			pinned[target]++
			for _, other := range f.nodes {
				for i := range 5 {
					code, got, _ := other.get(client, &http.Cookie{Name: "AWSALB", Value: cookie.Value})
					if code != 200 || got != target {
						t.Fatalf("a cookie %s issued for %s: request %d through %s answered %d %q, want %q", issuer.id, target, i, other.id, code, got, target)
					}
				}
			}
		}
	}
	t.Logf("cookies issued by every node for %v, honoured by every node", pinned)
}
