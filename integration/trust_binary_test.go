package integration_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// reload loads cfg through the admin API, as an operator does.
func (p *caddyProc) reload(cfg []byte) {
	p.t.Helper()
	resp, err := http.Post("http://"+p.admin+"/load", "application/json", bytes.NewReader(cfg))
	if err != nil {
		p.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		p.t.Fatalf("POST /load: status %d", resp.StatusCode)
	}
}

// TestBinaryTrust drives a Caddy built with xcaddy (with the race detector
// under make test): first requests of several routes at once after a start
// and after reloads (proxies are built at provisioning, nothing races), and
// a reload that narrows allowed_cidrs, which takes registered targets and
// host names resolving outside out of service at once and brings them back
// when it is widened again.
func TestBinaryTrust(t *testing.T) {
	t.Parallel()
	p := newCaddyProc(t)
	b := newBackend(t, "b")
	const n = 4
	var apiGroups []string
	for i := range n {
		apiGroups = append(apiGroups, fmt.Sprintf("api-%d", i))
	}
	routes := append([]string{"web", "inst"}, apiGroups...)
	cfg := caddyConfig{groups: webGroup, routes: groupRoutes(routes...)}
	wide := p.expand(cfg.json())
	cfg.app = map[string]any{"allowed_cidrs": []string{"10.0.0.0/8"}}
	narrow := p.expand(cfg.json())
	p.start(wide)
	in := &instance{t: t, admin: p.admin, http: p.http}

	createOpenGroups(in, b.port(), apiGroups...)
	for round := range 3 {
		if round > 0 {
			p.reload(wide)
		}
		for i, c := range requestAllAtOnce(p.http, apiGroups) {
			if c != 200 {
				t.Fatalf("round %d, %s: status %d", round, apiGroups[i], c)
			}
		}
	}

	// A registered ip target and a host name, both in service.
	in.register("web", b.port())
	body := fmt.Sprintf(`{"name":"inst","type":"instance","port":%d,"health_check":{"interval":"5s","timeout":"2s"},"targets":[{"id":"localhost"}]}`, b.port())
	in.mustAPI("POST", "/target-groups/", body, nil)
	webKey, instKey := fmt.Sprintf("127.0.0.1:%d", b.port()), fmt.Sprintf("localhost:%d", b.port())
	in.waitStates("web", map[string]string{webKey: "healthy"})
	in.waitStates("inst", map[string]string{instKey: "healthy"})

	p.reload(narrow)
	connections := b.checks.Load() + b.hits.Load()
	if e := in.health("web").Targets[0].TargetHealth; e.State != "unused" || e.Reason != "Target.InvalidState" {
		t.Fatalf("web after narrowing: %+v, want unused / Target.InvalidState at once", e)
	}
	for _, path := range []string{"/web", "/api-0"} {
		if code, _ := in.get(path); code != 503 {
			t.Fatalf("%s after narrowing: status %d, want 503", path, code)
		}
	}
	// The host name is found outside at its next check, and never reached.
	waitFor(t, "the host name to resolve outside allowed_cidrs", 20*time.Second, func() bool {
		return in.states("inst")[instKey] == "unused"
	})
	if e := in.health("inst").Targets[0].TargetHealth; e.Reason != "Target.InvalidState" || !strings.Contains(e.Description, "127.0.0.1") {
		t.Fatalf("inst after narrowing: %+v, want Target.InvalidState naming 127.0.0.1", e)
	}
	if code, _ := in.get("/inst"); code != 503 {
		t.Fatalf("/inst after narrowing: status %d, want 503", code)
	}
	if now := b.checks.Load() + b.hits.Load(); now != connections {
		t.Fatalf("the backend was connected to %d times outside allowed_cidrs", now-connections)
	}

	p.reload(wide)
	if s := in.states("web")[webKey]; s != "initial" {
		t.Fatalf("web after widening: %s, want initial", s)
	}
	in.waitStates("web", map[string]string{webKey: "healthy"})
	in.waitStates("inst", map[string]string{instKey: "healthy"})
	for _, path := range []string{"/web", "/inst", "/api-0"} {
		if code, body := in.get(path); code != 200 || body != "b" {
			t.Fatalf("%s after widening: %d %q", path, code, body)
		}
	}
}
