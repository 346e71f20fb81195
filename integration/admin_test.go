package integration_test

import (
	"reflect"
	"strings"
	"testing"
)

// adminConfig declares a group with one config target, next to an empty one.
var adminConfig = caddyConfig{
	groups: map[string]any{
		"web": `{
			"port": 8080,
			"health_check": {"interval": "5s", "timeout": "2s"},
			"targets": [{"id": "127.0.0.1", "port": 1, "availability_zone": "a"}],
			"tags": {"team": "web"}
		}`,
		"api-v6": `{"ip_address_type": "ipv6", "protocol": "HTTPS", "health_check": {"enabled": false}}`,
	},
	routes: []any{route("", tgHandler("web"))},
}.json()

func TestAdminDescribe(t *testing.T) {
	in := startCaddy(t, adminConfig)
	var list struct {
		TargetGroups []map[string]any `json:"target_groups"`
	}
	in.mustAPI("GET", "/target-groups/", nil, &list)
	if len(list.TargetGroups) != 2 || list.TargetGroups[0]["name"] != "api-v6" || list.TargetGroups[1]["name"] != "web" {
		t.Fatalf("list: %v", list)
	}
	web := list.TargetGroups[1]
	for k, want := range map[string]any{"status": "ACTIVE", "source": "config", "protocol": "HTTP", "protocol_version": "HTTP1", "type": "ip", "port": 8080.0, "ip_address_type": "ipv4"} {
		if web[k] != want {
			t.Errorf("web.%s = %v, want %v", k, web[k], want)
		}
	}
	if id, _ := web["id"].(string); !strings.HasPrefix(id, "tg-") || len(id) != 20 {
		t.Errorf("id %q is not tg- and 17 characters", id)
	}
	if arn, _ := web["arn"].(string); !strings.Contains(arn, ":targetgroup/web/") {
		t.Errorf("arn %q", arn)
	}
	hc := web["health_check"].(map[string]any)
	wantHC := map[string]any{"enabled": true, "protocol": "HTTP", "protocol_version": "HTTP1", "port": "traffic-port", "path": "/",
		"interval": "5s", "timeout": "2s", "healthy_threshold": 5.0, "unhealthy_threshold": 2.0, "matcher": map[string]any{"http_code": "200"}}
	if !reflect.DeepEqual(hc, wantHC) {
		t.Errorf("health_check with defaults = %v\nwant %v", hc, wantHC)
	}
	attrs := web["attributes"].(map[string]any)
	for k, want := range map[string]string{"deregistration_delay.timeout_seconds": "300", "load_balancing.algorithm.type": "round_robin", "slow_start.duration_seconds": "0", "stickiness.enabled": "false", "stickiness.type": "lb_cookie", "stickiness.lb_cookie.duration_seconds": "86400"} {
		if attrs[k] != want {
			t.Errorf("attribute %s = %v, want %s", k, attrs[k], want)
		}
	}

	var one map[string]any
	if code := in.api("GET", "/target-groups/api-v6", nil, &one); code != 200 || one["port"] != 443.0 {
		t.Fatalf("describe api-v6: %d %v", code, one)
	}
	var th healthAnswer
	in.mustAPI("GET", "/target-groups/web/targets", nil, &th)
	if len(th.Targets) != 1 || th.Targets[0].Target.AZ != "a" || th.Targets[0].HealthCheckPort != "1" {
		t.Fatalf("describe target health: %+v", th)
	}
	if st := th.Targets[0].TargetHealth; st.State != "initial" && st.State != "unhealthy" {
		t.Fatalf("a target on a closed port is %+v", st)
	}

	var gh map[string]any
	// No healthy target yet: the group is unhealthy (NLB).
	if code := in.api("GET", "/target-groups/web/health", nil, &gh); code != 503 || gh["total"] != 1.0 || gh["dns_failover"] != true {
		t.Fatalf("group health: %d %v", code, gh)
	}

	// Disabled health checks: every target is unavailable and routable.
	in.mustAPI("POST", "/target-groups/api-v6/targets", map[string]any{"targets": []map[string]any{{"id": "::1", "port": 9443}}}, nil)
	var v6 healthAnswer
	in.mustAPI("GET", "/target-groups/api-v6/targets", nil, &v6)
	if len(v6.Targets) != 1 || v6.Targets[0].TargetHealth.State != "unavailable" || v6.Targets[0].TargetHealth.Reason != "Target.HealthCheckDisabled" {
		t.Fatalf("api-v6 targets: %+v", v6)
	}
}

func TestAdminBadInputChangesNothing(t *testing.T) {
	in := startCaddy(t, adminConfig)
	in.register("web", 9001)
	before := in.states("web")
	if len(before) != 2 {
		t.Fatalf("setup: %v", before)
	}
	huge := `{"targets":[{"id":"127.0.0.1","availability_zone":"` + strings.Repeat("x", 1<<20) + `"}]}`
	cases := []struct {
		name, method, path, body string
		status                   int
		code, mention            string
	}{
		{"public address", "POST", "/target-groups/web/targets", `{"targets":[{"id":"8.8.8.8"}]}`, 400, "ValidationException", "allowed CIDR"},
		{"one bad target rejects the batch", "POST", "/target-groups/web/targets", `{"targets":[{"id":"127.0.0.1","port":9002},{"id":"1.1.1.1"}]}`, 400, "ValidationException", "targets[1].id"},
		{"not an IP", "POST", "/target-groups/web/targets", `{"targets":[{"id":"localhost"}]}`, 400, "ValidationException", "not an IP address"},
		{"IPv6 target in an IPv4 group", "POST", "/target-groups/web/targets", `{"targets":[{"id":"::1","port":9003}]}`, 400, "ValidationException", "ip_address_type"},
		{"port out of range", "POST", "/target-groups/web/targets", `{"targets":[{"id":"127.0.0.1","port":70000}]}`, 400, "ValidationException", "1-65535"},
		{"unknown field", "POST", "/target-groups/web/targets", `{"targets":[{"id":"127.0.0.1","prot":80}]}`, 400, "ValidationException", "prot"},
		{"malformed JSON", "POST", "/target-groups/web/targets", `{"targets":[`, 400, "ValidationException", "body"},
		{"trailing data", "POST", "/target-groups/web/targets", `{"targets":[{"id":"127.0.0.1","port":9004}]} {}`, 400, "ValidationException", "after the JSON"},
		{"no targets", "POST", "/target-groups/web/targets", `{"targets":[]}`, 400, "ValidationException", "at least one"},
		{"empty body", "POST", "/target-groups/web/targets", ``, 400, "ValidationException", "JSON object"},
		{"body too large", "POST", "/target-groups/web/targets", huge, 413, "PayloadTooLarge", "bytes"},
		{"unknown group", "POST", "/target-groups/nope/targets", `{"targets":[{"id":"127.0.0.1"}]}`, 404, "ResourceNotFoundException", `"nope"`},
		{"config target", "POST", "/target-groups/web/targets/deregister", `{"targets":[{"id":"127.0.0.1","port":1}]}`, 409, "OperationNotPermitted", "config"},
		{"wrong method", "DELETE", "/target-groups/web/targets", ``, 405, "MethodNotAllowed", "GET, POST"},
		{"unknown resource", "GET", "/target-groups/web/nothing", ``, 404, "ResourceNotFoundException", "no such resource"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e apiError
			if got := in.api(tc.method, tc.path, tc.body, &e); got != tc.status {
				t.Errorf("status %d, want %d (%+v)", got, tc.status, e)
			}
			if e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.mention) {
				t.Errorf("error %+v, want code %s mentioning %q", e.Error, tc.code, tc.mention)
			}
			if after := in.states("web"); !reflect.DeepEqual(after, before) {
				t.Errorf("targets changed: %v, before %v", after, before)
			}
		})
	}

	// Deregistering what is not registered succeeds and changes nothing.
	in.mustAPI("POST", "/target-groups/web/targets/deregister", targets(9999), nil)
	if after := in.states("web"); !reflect.DeepEqual(after, before) {
		t.Fatalf("targets changed: %v", after)
	}
	// Registering a registered target again changes nothing either.
	in.register("web", 9001)
	if after := in.states("web"); len(after) != 2 {
		t.Fatalf("re-registration: %v", after)
	}
	// A target registered without a port gets the group's port.
	in.mustAPI("POST", "/target-groups/web/targets", `{"targets":[{"id":"127.0.0.2"}]}`, nil)
	if _, ok := in.states("web")["127.0.0.2:8080"]; !ok {
		t.Fatalf("target without port: %v", in.states("web"))
	}
}

func TestAdminWithoutApp(t *testing.T) {
	in := startCaddy(t, caddyConfig{}.json())
	var e apiError
	if code := in.api("GET", "/target-groups/", nil, &e); code != 503 || !strings.Contains(e.Error.Message, "target_groups") {
		t.Fatalf("status %d %+v", code, e)
	}
}

func TestConfigErrorsNameGroupFieldAndRange(t *testing.T) {
	cases := map[string]string{
		`"health_check": {"timeout": "200s"}`:                                                                                "health_check.timeout: 200s is outside 1s-120s",
		`"health_check": {"interval": "10s", "timeout": "10s"}`:                                                              "must be shorter than the interval",
		`"health_check": {"healthy_threshold": 11}`:                                                                          "health_check.healthy_threshold: 11 is outside 2-10",
		`"health_check": {"protocol": "TCP"}`:                                                                                "TCP health checks are not supported for HTTP groups",
		`"attributes": {"deregistration_delay.timeout_seconds": "3601"}`:                                                     "0-3600",
		`"attributes": {"slow_start.duration_seconds": "10"}`:                                                                "0 (disabled) or an integer within 30-900",
		`"attributes": {"stickiness.lb_cookie.duration_seconds": "604801"}`:                                                  "1-604800",
		`"attributes": {"load_balancing.algorithm.type": "least_outstanding_requests", "slow_start.duration_seconds": "60"}`: "cannot be combined with slow start",
		`"attributes": {"proxy_protocol_v2.enabled": "true"}`:                                                                "not supported for HTTP/HTTPS groups",
		`"attributes": {"nope": "1"}`:                                                                                        `unknown attribute key "nope"`,
		`"targets": [{"id": "203.0.113.7", "port": 80}]`:                                                                     "outside the allowed CIDR blocks",
		`"tags": {"aws:owner": "x"}`:                                                                                         `must not begin with "aws:"`,
		`"protocol": "SCTP"`:                                                                                                 "must be one of HTTP, HTTPS, TCP, TLS, UDP, TCP_UDP",
		`"protocol": "TCP"`:                                                                                                  "port: required for TCP groups",
		`"type": "lambda", "port": 80`:                                                                                       "not supported for lambda",
		`"type": "lambda", "targets": [{"id": "f1"}, {"id": "f2"}]`:                                                          "a lambda target group holds a single target",
		`"type": "alb", "protocol": "TCP", "port": 80, "health_check": {"protocol": "TCP"}`:                                  "alb support HTTP and HTTPS health checks only",
		`"health_check": {"matcher": {"http_code": "200-700"}}`:                                                              "599",
	}
	for frag, want := range cases {
		t.Run(want, func(t *testing.T) {
			in := newInstance(t)
			err := in.load(caddyConfig{groups: map[string]any{"web": `{` + frag + `}`}}.json())
			if err == nil {
				t.Fatalf("config with %s loaded", frag)
			}
			if !strings.Contains(err.Error(), `target group "web"`) || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not name the group and %q", err, want)
			}
		})
	}
	in := newInstance(t)
	if err := in.load(caddyConfig{groups: map[string]any{"Web--1": `{}`}}.json()); err == nil || !strings.Contains(err.Error(), "name") {
		t.Fatalf("bad name: %v", err)
	}
}
