package targetgroup

import (
	"bytes"
	"encoding/json"
	"fmt"
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
		b.Write(mustJSON(t, []any{g.created, g.clientToken}))
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
