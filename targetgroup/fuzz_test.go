package targetgroup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// Fuzz targets of the group JSON and the admin API. Each runs its seeds in
// every `go test`; fuzz one at a time with, for instance,
//
//	go test ./targetgroup -run '^$' -fuzz '^FuzzNewSpec$' -fuzztime 1m

var specSeeds = []string{
	`{}`,
	`{"protocol":"HTTP","port":9001,"health_check":{"path":"/health","interval":"5s","timeout":"2s","healthy_threshold":2,"unhealthy_threshold":2},"attributes":{"deregistration_delay.timeout_seconds":"10","load_balancing.algorithm.type":"round_robin"}}`,
	`{"protocol":"HTTPS","protocol_version":"GRPC","health_check":{"matcher":{"grpc_code":"0-99"},"port":"traffic-port"}}`,
	`{"protocol":"TCP","port":5432,"health_check":{"protocol":"HTTP","port":8080,"matcher":{"http_code":"200-399"}},"attributes":{"proxy_protocol_v2.enabled":"true","target_health_state.unhealthy.connection_termination.enabled":"false","target_health_state.unhealthy.draining_interval_seconds":"30"}}`,
	`{"protocol":"UDP","port":53,"attributes":{"stickiness.enabled":"true","stickiness.type":"source_ip"}}`,
	`{"type":"lambda","targets":[{"id":"arn:aws:lambda:us-east-1:123456789012:function:f"}]}`,
	`{"type":"instance","port":80,"targets":[{"id":"web-1.internal","availability_zone":"a"}]}`,
	`{"type":"alb","protocol":"TCP","port":80,"targets":[{"id":"alb.internal"}]}`,
	`{"ip_address_type":"ipv6","targets":[{"id":"::1","port":8080,"weight":3}],"attributes":{"load_balancing.algorithm.type":"weighted_random","load_balancing.algorithm.anomaly_mitigation":"on"}}`,
	`{"attributes":{"stickiness.enabled":"true","stickiness.type":"app_cookie","stickiness.app_cookie.cookie_name":"SESSION","slow_start.duration_seconds":"30"}}`,
	`{"attributes":{"stickiness.enabled":"true","stickiness.lb_cookie.duration_seconds":"604800","target_group_health.dns_failover.minimum_healthy_targets.count":"2","target_group_health.unhealthy_state_routing.minimum_healthy_targets.count":"1"}}`,
	`{"health_check":{"enabled":false,"passive_unhealthy_threshold":3},"tags":{"team":"web","cost-center":"a/b=c"}}`,
	`{"targets":[{"id":"127.0.0.1","port":1},{"id":"127.0.0.1","port":1}]}`,
	`{"health_check":{"interval":"1d","timeout":1000000000}}`,
}

// FuzzNewSpec validates fuzzed group JSON. No input may panic or modify
// the config it was given; an accepted group must come out the same when
// validated again, straight or after a JSON round trip — which is what the
// admin API answers and what storage keeps, so a group that fails it would
// not survive a restart.
func FuzzNewSpec(f *testing.F) {
	for _, s := range specSeeds {
		f.Add([]byte(s))
	}
	allowed, err := ParseCIDRs(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c GroupConfig
		if json.Unmarshal(data, &c) != nil {
			return
		}
		given := c.Clone()
		s, err := NewSpec(&c, allowed)
		if !reflect.DeepEqual(&c, given) {
			t.Fatalf("NewSpec modified its input:\nbefore %+v\nafter  %+v", given, &c)
		}
		if err != nil {
			if !IsValidationError(err) {
				t.Fatalf("rejection is not a validation error: %T %v", err, err)
			}
			return
		}
		again, err := NewSpec(&s.Config, allowed)
		if err != nil {
			t.Fatalf("the normalized group is rejected: %v\n%s", err, mustJSON(t, s.Config))
		}
		if !reflect.DeepEqual(again.Config, s.Config) || !reflect.DeepEqual(again.Attributes, s.Attributes) {
			t.Fatalf("normalizing twice changes the group:\n%s\n%s", mustJSON(t, s.Config), mustJSON(t, again.Config))
		}
		var back GroupConfig
		if err := json.Unmarshal(mustJSON(t, s.Config), &back); err != nil {
			t.Fatalf("the normalized group's JSON does not decode: %v", err)
		}
		rt, err := NewSpec(&back, allowed)
		if err != nil {
			t.Fatalf("the normalized group's JSON is rejected: %v\n%s", err, mustJSON(t, s.Config))
		}
		if !bytes.Equal(mustJSON(t, rt.Config), mustJSON(t, s.Config)) {
			t.Fatalf("JSON round trip changes the group:\n%s\n%s", mustJSON(t, s.Config), mustJSON(t, rt.Config))
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// adminOps are the calls FuzzAdminAPI makes, each with a fuzzed body.
var adminOps = []struct{ method, path string }{
	{http.MethodPost, "/target-groups/"},
	{http.MethodPost, "/target-groups/web/targets"},
	{http.MethodPost, "/target-groups/api/targets"},
	{http.MethodPost, "/target-groups/web/targets/deregister"},
	{http.MethodPost, "/target-groups/api/targets/deregister"},
	{http.MethodPatch, "/target-groups/api"},
	{http.MethodPatch, "/target-groups/web"},
	{http.MethodPatch, "/target-groups/api/attributes"},
	{http.MethodPatch, "/target-groups/web/attributes"},
	{http.MethodDelete, "/target-groups/api"},
	{http.MethodGet, "/target-groups/web/targets"},
	{http.MethodGet, "/target-groups/"},
}

// adminFixture is a registry with a config group "web" (a config target on
// port 1 and an API target on port 2) and an API group "api" (created with a
// client token, one target), on a clock that never fires, so that drain
// timers stay put.
func adminFixture(t *testing.T) *Registry {
	t.Helper()
	r := newRegistry(zap.NewNop())
	r.clock = &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	web, err := NewSpec(&GroupConfig{Port: 8080, Targets: []TargetConfig{{ID: "127.0.0.1", Port: 1}}}, r.Allowed())
	if err != nil {
		t.Fatal(err)
	}
	g := newGroup(r, "web", web, SourceConfig)
	g.lock()
	g.register(web.Config.Targets, ownerConfig)
	g.register([]TargetConfig{{ID: "127.0.0.1", Port: 2}}, ownerAPI)
	g.publish()
	g.unlock()
	m := map[string]*Group{"web": g}
	r.groups.Store(&m)
	if _, _, err := r.CreateGroup(CreateRequest{Name: "api", ClientToken: "tok-1", GroupConfig: GroupConfig{
		Port:        9000,
		HealthCheck: &HealthCheckConfig{Path: "/health"},
		Attributes:  map[string]string{AttrDeregistrationDelay: "30"},
		Targets:     []TargetConfig{{ID: "10.0.0.1"}},
	}}); err != nil {
		t.Fatal(err)
	}
	return r
}

// fingerprint is everything the admin API can change, in a comparable form.
func fingerprint(t *testing.T, r *Registry) string {
	t.Helper()
	var b strings.Builder
	for _, g := range r.Groups() {
		b.Write(mustJSON(t, g.Describe()))
		b.Write(mustJSON(t, g.DescribeTargetHealth()))
		g.mu.Lock()
		b.Write(mustJSON(t, []any{g.created, g.clientToken, len(g.tombstones)}))
		g.mu.Unlock()
	}
	r.mu.Lock()
	tokens := make([]string, 0, len(r.tokens))
	for k, v := range r.tokens {
		tokens = append(tokens, k+"="+v)
	}
	r.mu.Unlock()
	sort.Strings(tokens)
	b.WriteString(strings.Join(tokens, ","))
	fmt.Fprintf(&b, "|jobs=%d", r.sched.Len())
	return b.String()
}

// FuzzAdminAPI sends fuzzed bodies (and target filters) to the admin
// handler. Nothing may panic or answer 500; every answer is the JSON the
// contract describes; a rejected call (any status but 200) changes nothing.
func FuzzAdminAPI(f *testing.F) {
	seeds := []struct {
		op   uint8
		body string
	}{
		{0, `{"name":"new-group","port":9101,"health_check":{"path":"/health","interval":"10s"},"targets":[{"id":"127.0.0.1"}]}`},
		{0, `{"name":"api","client_token":"tok-1","port":9000}`},
		{0, `{"name":"tg-bad"}`},
		{1, `{"targets":[{"id":"127.0.0.1","port":9001,"availability_zone":"a"},{"id":"127.0.0.1","port":9002}]}`},
		{1, `{"targets":[{"id":"127.0.0.1","port":9001},{"id":"8.8.8.8","port":9002}]}`},
		{2, `{"targets":[{"id":"10.0.0.2","weight":1000}]}`},
		{3, `{"targets":[{"id":"127.0.0.1","port":1}]}`},
		{3, `{"targets":[{"id":"127.0.0.1","port":2}]}`},
		{4, `{"targets":[{"id":"10.0.0.1"}]}`},
		{5, `{"health_check":{"healthy_threshold":3,"matcher":{"http_code":"200-299"}}}`},
		{5, `{"health_check":{"interval":"1s"}}`},
		{6, `{"health_check":{"healthy_threshold":3}}`},
		{7, `{"attributes":{"deregistration_delay.timeout_seconds":"30","load_balancing.algorithm.type":"least_outstanding_requests"}}`},
		{7, `{"attributes":{"slow_start.duration_seconds":"30","load_balancing.algorithm.type":"least_outstanding_requests"}}`},
		{8, `{"attributes":{"deregistration_delay.timeout_seconds":"30"}}`},
		{9, ``},
		{10, `127.0.0.1:1`},
		{10, `127.0.0.1:99999`},
		{11, ``},
		{1, `{"targets":[]}`},
		{1, `{"targets":[{"id":"127.0.0.1"}]} {}`},
		{1, `{"targets":[{"id":"127.0.0.1","colour":"blue"}]}`},
	}
	for _, s := range seeds {
		f.Add(s.op, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		r := adminFixture(t)
		defer r.Destruct()
		current.Store(r)
		defer current.CompareAndSwap(r, nil)

		call := adminOps[int(op)%len(adminOps)]
		before := fingerprint(t, r)
		path := call.path
		var rd *bytes.Reader
		if call.method == http.MethodGet && strings.HasSuffix(path, "/targets") {
			// The body is the DescribeTargetHealth filter instead.
			path += "?target=" + urlEscape(string(body))
			rd = bytes.NewReader(nil)
		} else {
			rd = bytes.NewReader(body)
		}
		req := httptest.NewRequest(call.method, path, rd)
		w := httptest.NewRecorder()
		if err := new(AdminAPI).serve(w, req); err != nil {
			t.Fatalf("serve returned %v", err)
		}
		if w.Code == http.StatusInternalServerError {
			t.Fatalf("%s %s %q: 500: %s", call.method, path, body, w.Body.Bytes())
		}
		var answer map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil && w.Code != http.StatusOK {
			t.Fatalf("%s %s: answer is not JSON: %q", call.method, path, w.Body.Bytes())
		}
		if w.Code == http.StatusOK {
			return
		}
		if e, ok := answer["error"].(map[string]any); !ok || e["code"] == "" || e["message"] == "" {
			t.Fatalf("%s %s: status %d without an error object: %s", call.method, path, w.Code, w.Body.Bytes())
		}
		if after := fingerprint(t, r); after != before {
			t.Fatalf("%s %s %q was rejected (%d: %s) but changed the state:\nbefore %s\nafter  %s", call.method, path, body, w.Code, w.Body.Bytes(), before, after)
		}
	})
}

// urlEscape percent-encodes every byte outside a small safe set.
func urlEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == ':' || c == '-' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
