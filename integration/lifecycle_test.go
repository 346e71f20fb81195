package integration_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func TestLongRequestSurvivesDeregistration(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	in := startCaddy(t, shorthandConfig)
	in.register("web", a.port(), b.port())
	in.waitStates("web", map[string]string{fmt.Sprintf("127.0.0.1:%d", a.port()): "healthy", fmt.Sprintf("127.0.0.1:%d", b.port()): "healthy"})

	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	go func() {
		code, body := in.get("/?sleep=2s")
		done <- result{code, body}
	}()
	waitFor(t, "the long request to reach a backend", 5*time.Second, func() bool { return a.hits.Load()+b.hits.Load() == 1 })
	busy, other := a, b
	if b.hits.Load() == 1 {
		busy, other = b, a
	}
	key := fmt.Sprintf("127.0.0.1:%d", busy.port())
	in.mustAPI("POST", "/target-groups/web/targets/deregister", targets(busy.port()), nil)
	for _, e := range in.health("web").Targets {
		if fmt.Sprintf("%s:%d", e.Target.ID, e.Target.Port) == key && (e.TargetHealth.State != "draining" || e.InFlight != 1) {
			t.Fatalf("draining target described as %+v", e)
		}
	}
	busy.hits.Store(0)
	for i := 0; i < 20; i++ {
		if code, body := in.get("/"); code != 200 || body != other.name {
			t.Fatalf("request during draining: %d %q", code, body)
		}
	}
	if busy.hits.Load() != 0 {
		t.Fatalf("the draining target got %d new requests", busy.hits.Load())
	}
	r := <-done
	if r.code != 200 || r.body != busy.name {
		t.Fatalf("the in-flight request ended with %d %q", r.code, r.body)
	}
	waitFor(t, "in-flight count back to 0", 5*time.Second, func() bool {
		for _, e := range in.health("web").Targets {
			if fmt.Sprintf("%s:%d", e.Target.ID, e.Target.Port) == key {
				return e.InFlight == 0 && e.TargetHealth.State == "draining"
			}
		}
		return false
	})
}

func TestDrainingThenUnused(t *testing.T) {
	a := newBackend(t, "a")
	in := startCaddy(t, shorthand("5s", "1"))
	in.register("web", a.port())
	key := fmt.Sprintf("127.0.0.1:%d", a.port())
	in.waitStates("web", map[string]string{key: "healthy"})
	start := time.Now()
	in.mustAPI("POST", "/target-groups/web/targets/deregister", targets(a.port()), nil)
	if st := in.states("web")[key]; st != "draining" {
		t.Fatalf("state %q, want draining", st)
	}
	waitFor(t, "the target to leave the group", 10*time.Second, func() bool { return len(in.states("web")) == 0 })
	if d := time.Since(start); d < time.Second {
		t.Fatalf("left after %s, before the 1s delay", d)
	}
	var h healthAnswer
	in.mustAPI("GET", fmt.Sprintf("/target-groups/web/targets?target=%s", key), nil, &h)
	if len(h.Targets) != 1 || h.Targets[0].TargetHealth.State != "unused" || h.Targets[0].TargetHealth.Reason != "Target.NotRegistered" {
		t.Fatalf("deregistered target described as %+v", h)
	}
	// Re-registration after the delay starts over.
	in.register("web", a.port())
	in.waitStates("web", map[string]string{key: "healthy"})
}

// apiGroupsConfig declares "web" and routes /api to "api", a group only the
// admin API creates.
var apiGroupsConfig = caddyConfig{
	groups: map[string]any{"web": `{"health_check": {"interval": "5s", "timeout": "2s"}}`},
	routes: []any{route("/api", tgHandler("api")), route("", tgHandler("web"))},
}.json()

func TestGroupManagementAPI(t *testing.T) {
	a := newBackend(t, "a")
	in := startCaddy(t, apiGroupsConfig)
	if code, body := in.get("/api"); code != 503 || !strings.Contains(body, `"api" does not exist`) {
		t.Fatalf("before creation: %d %q", code, body)
	}
	create := map[string]any{
		"name": "api", "client_token": "tok-1", "port": a.port(),
		"health_check": map[string]any{"interval": "5s", "timeout": "2s", "path": "/health"},
		"targets":      []map[string]any{{"id": "127.0.0.1"}},
		"tags":         map[string]string{"team": "api"},
	}
	var g map[string]any
	if code := in.api("POST", "/target-groups/", create, &g); code != 200 {
		t.Fatalf("create: %d %v", code, g)
	}
	if g["status"] != "ACTIVE" || g["source"] != "api" || !strings.HasPrefix(g["id"].(string), "tg-") || g["arn"] == "" {
		t.Fatalf("create answered %v", g)
	}
	if hc := g["health_check"].(map[string]any); hc["matcher"].(map[string]any)["http_code"] != "200" || hc["healthy_threshold"] != 5.0 {
		t.Fatalf("defaults not filled in: %v", hc)
	}
	id := g["id"]
	in.waitStates("api", map[string]string{fmt.Sprintf("127.0.0.1:%d", a.port()): "healthy"})
	if code, body := in.get("/api"); code != 200 || body != "a" {
		t.Fatalf("through the created group: %d %q", code, body)
	}

	// Idempotency and clashes.
	var again map[string]any
	if code := in.api("POST", "/target-groups/", create, &again); code != 200 || again["id"] != id {
		t.Fatalf("same token, same parameters: %d %v", code, again)
	}
	var e apiError
	changed := map[string]any{"name": "api", "client_token": "tok-1", "port": 81}
	if code := in.api("POST", "/target-groups/", changed, &e); code != 409 || e.Error.Code != "ConflictException" {
		t.Fatalf("same token, other parameters: %d %+v", code, e)
	}
	noToken := map[string]any{"name": "api", "port": a.port(), "health_check": map[string]any{"interval": "5s", "timeout": "2s", "path": "/health"}, "tags": map[string]string{"team": "api"}}
	if code := in.api("POST", "/target-groups/", noToken, &again); code != 200 || again["id"] != id {
		t.Fatalf("existing name, identical settings: %d %v", code, again)
	}
	if code := in.api("POST", "/target-groups/", map[string]any{"name": "api", "port": 81}, &e); code != 409 || e.Error.Code != "DuplicateTargetGroupName" {
		t.Fatalf("existing name, other settings: %d %+v", code, e)
	}
	if code := in.api("POST", "/target-groups/", map[string]any{"name": "bad--name"}, &e); code != 400 || !strings.Contains(e.Error.Message, "name") {
		t.Fatalf("bad name: %d %+v", code, e)
	}

	// ModifyTargetGroup changes only the named health check fields.
	var mod map[string]any
	if code := in.api("PATCH", "/target-groups/api", `{"health_check":{"healthy_threshold":3}}`, &mod); code != 200 {
		t.Fatalf("patch: %d %v", code, mod)
	}
	hc := mod["health_check"].(map[string]any)
	if hc["healthy_threshold"] != 3.0 || hc["path"] != "/health" || hc["interval"] != "5s" {
		t.Fatalf("after patch: %v", hc)
	}
	if st := in.states("api")[fmt.Sprintf("127.0.0.1:%d", a.port())]; st != "healthy" {
		t.Fatalf("a settings change reset the target to %q", st)
	}
	if code := in.api("PATCH", "/target-groups/api", `{"health_check":{"interval":"1s"}}`, &e); code != 400 || !strings.Contains(e.Error.Message, "5s-300s") {
		t.Fatalf("bad patch: %d %+v", code, e)
	}
	if code := in.api("PATCH", "/target-groups/api", `{"port":81}`, &e); code != 400 {
		t.Fatalf("patching the port: %d %+v", code, e)
	}

	// Attributes.
	var attrs struct {
		Attributes map[string]string `json:"attributes"`
	}
	if code := in.api("PATCH", "/target-groups/api/attributes", `{"attributes":{"deregistration_delay.timeout_seconds":"5"}}`, &attrs); code != 200 || attrs.Attributes["deregistration_delay.timeout_seconds"] != "5" {
		t.Fatalf("modify attributes: %d %v", code, attrs)
	}
	for body, want := range map[string]string{
		`{"attributes":{"deregistration_delay.timeout_seconds":"9999"}}`:                                                   "0-3600",
		`{"attributes":{"no.such.key":"1"}}`:                                                                               "unknown attribute key",
		`{"attributes":{"slow_start.duration_seconds":"60","load_balancing.algorithm.type":"least_outstanding_requests"}}`: "slow start",
	} {
		if code := in.api("PATCH", "/target-groups/api/attributes", body, &e); code != 400 || !strings.Contains(e.Error.Message, want) {
			t.Fatalf("bad attributes %s: %d %+v", body, code, e)
		}
	}
	in.mustAPI("GET", "/target-groups/api/attributes", nil, &attrs)
	if attrs.Attributes["deregistration_delay.timeout_seconds"] != "5" || attrs.Attributes["slow_start.duration_seconds"] != "0" {
		t.Fatalf("a rejected change changed attributes: %v", attrs.Attributes)
	}

	// The config owns its groups.
	for _, c := range []struct{ method, path, body string }{
		{"PATCH", "/target-groups/web", `{"health_check":{"healthy_threshold":3}}`},
		{"PATCH", "/target-groups/web/attributes", `{"attributes":{"deregistration_delay.timeout_seconds":"5"}}`},
		{"DELETE", "/target-groups/web", ``},
	} {
		if code := in.api(c.method, c.path, c.body, &e); code != 409 || e.Error.Code != "OperationNotPermitted" || !strings.Contains(e.Error.Message, "config") {
			t.Fatalf("%s %s: %d %+v", c.method, c.path, code, e)
		}
	}

	// A group a route uses can't be deleted; one no route uses can.
	if code := in.api("DELETE", "/target-groups/api", nil, &e); code != 409 || e.Error.Code != "ResourceInUse" {
		t.Fatalf("delete in use: %d %+v", code, e)
	}
	in.mustAPI("POST", "/target-groups/", map[string]any{"name": "spare", "port": 8080}, nil)
	in.mustAPI("DELETE", "/target-groups/spare", nil, nil)
	if code := in.api("GET", "/target-groups/spare", nil, &e); code != 404 || e.Error.Code != "ResourceNotFoundException" {
		t.Fatalf("after delete: %d %+v", code, e)
	}
}

func TestRestartRestoresRegistrations(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	in := newInstance(t)
	if err := in.load(apiGroupsConfig); err != nil {
		t.Fatal(err)
	}
	in.register("web", a.port(), b.port())
	in.mustAPI("POST", "/target-groups/web/targets/deregister", targets(b.port()), nil)
	in.mustAPI("POST", "/target-groups/", map[string]any{"name": "api", "port": a.port(), "health_check": map[string]any{"interval": "5s", "timeout": "2s"}, "targets": []map[string]any{{"id": "127.0.0.1"}}}, nil)
	in.mustAPI("PATCH", "/target-groups/api/attributes", `{"attributes":{"deregistration_delay.timeout_seconds":"42"}}`, nil)
	var before []any
	var list struct {
		TargetGroups []any `json:"target_groups"`
	}
	in.mustAPI("GET", "/target-groups/", nil, &list)
	before = list.TargetGroups

	// Stop Caddy altogether (the registry goes away) and start it again
	// with the same storage.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := in.load(apiGroupsConfig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	in.mustAPI("GET", "/target-groups/", nil, &list)
	if !reflect.DeepEqual(list.TargetGroups, before) {
		t.Fatalf("after restart:\n%v\nbefore:\n%v", list.TargetGroups, before)
	}
	got := in.states("web")
	if _, ok := got[fmt.Sprintf("127.0.0.1:%d", a.port())]; !ok || len(got) != 1 {
		t.Fatalf("web after restart: %v (the deregistered target must not come back)", got)
	}
	in.waitStates("api", map[string]string{fmt.Sprintf("127.0.0.1:%d", a.port()): "healthy"})
	if code, body := in.get("/api"); code != 200 || body != "a" {
		t.Fatalf("restored group serves %d %q", code, body)
	}
	// The records are plain JSON files in the configured storage: this
	// node's contribution to each group.
	raw := storedContribution(t, in.storage, "api")
	var rec map[string]any
	if err := json.Unmarshal(raw, &rec); err != nil || rec["seq"] == nil || rec["settings"] == nil || rec["node"] == nil {
		t.Fatalf("record %s: %v", raw, err)
	}
}

// storedContribution reads the one node's stored contribution to group.
func storedContribution(t *testing.T, storage, group string) []byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(storage, "target_groups", "fleet", "nodes", "*", "groups", group+".json"))
	if err != nil || len(files) != 1 {
		t.Fatalf("stored contributions to %s: %v %v", group, files, err)
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestConcurrentRegistrationsStayConsistent(t *testing.T) {
	in := startCaddy(t, caddyConfig{groups: map[string]any{"web": `{"health_check": {"enabled": false}}`}}.json())
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			port := 10000 + i
			if code := in.api("POST", "/target-groups/web/targets", targets(port), nil); code != 200 {
				t.Errorf("register %d: %d", port, code)
			}
			if i%2 == 1 {
				if code := in.api("POST", "/target-groups/web/targets/deregister", targets(port), nil); code != 200 {
					t.Errorf("deregister %d: %d", port, code)
				}
			}
		}(i)
	}
	wg.Wait()
	got := in.states("web")
	if len(got) != 50 {
		t.Fatalf("%d targets, want 50", len(got))
	}
	for i := 0; i < 50; i++ {
		want := "unavailable"
		if i%2 == 1 {
			want = "draining"
		}
		if st := got[fmt.Sprintf("127.0.0.1:%d", 10000+i)]; st != want {
			t.Errorf("target %d is %q, want %q", 10000+i, st, want)
		}
	}
	var rec struct {
		Targets []struct {
			Port int
			Op   string
		} `json:"targets"`
	}
	if err := json.Unmarshal(storedContribution(t, in.storage, "web"), &rec); err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	for _, e := range rec.Targets {
		ops[e.Op]++
	}
	if len(rec.Targets) != 50 || ops["register"] != 25 || ops["deregister"] != 25 {
		t.Fatalf("stored %d targets (%v), want 25 registrations and 25 deregistrations", len(rec.Targets), ops)
	}
}

func TestQuotas(t *testing.T) {
	in := startCaddy(t, caddyConfig{
		groups: map[string]any{"web": `{"health_check": {"enabled": false}}`},
		app:    map[string]any{"max_targets_per_group": 1000, "max_groups": 2},
	}.json())
	batch := make([]int, 1000)
	for i := range batch {
		batch[i] = 20000 + i
	}
	in.register("web", batch...)
	var e apiError
	if code := in.api("POST", "/target-groups/web/targets", targets(30000), &e); code != 400 || e.Error.Code != "ServiceQuotaExceededException" {
		t.Fatalf("target 1,001: %d %+v", code, e)
	}
	if n := len(in.states("web")); n != 1000 {
		t.Fatalf("%d targets after the refused call", n)
	}
	in.mustAPI("POST", "/target-groups/", map[string]any{"name": "two", "port": 80}, nil)
	if code := in.api("POST", "/target-groups/", map[string]any{"name": "three", "port": 80}, &e); code != 400 || e.Error.Code != "ServiceQuotaExceededException" {
		t.Fatalf("group 3 of 2: %d %+v", code, e)
	}
}
