package targetgroup

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func mustSpec(t *testing.T, c *GroupConfig) *Spec {
	t.Helper()
	s, err := NewSpec(c, mustCIDRs(t))
	if err != nil {
		t.Fatalf("NewSpec(%+v): %v", c, err)
	}
	return s
}

func mustCIDRs(t *testing.T) []netip.Prefix {
	t.Helper()
	p, err := ParseCIDRs(nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsFollowTheSeeds(t *testing.T) {
	cases := []struct {
		name     string
		cfg      GroupConfig
		port     int
		hcProto  string
		interval time.Duration
		timeout  time.Duration
		matcher  string
		path     string
	}{
		{"HTTP group (Lattice defaults)", GroupConfig{}, 80, "HTTP", 30 * time.Second, 5 * time.Second, "200", "/"},
		{"HTTPS group", GroupConfig{Protocol: "https"}, 443, "HTTP", 30 * time.Second, 5 * time.Second, "200", "/"},
		{"gRPC group", GroupConfig{ProtocolVersion: "GRPC"}, 80, "HTTP", 30 * time.Second, 5 * time.Second, "12", "/AWS.ALB/healthcheck"},
		{"TCP group (NLB: TCP check, 10s)", GroupConfig{Protocol: "TCP", Port: 5432}, 5432, "TCP", 30 * time.Second, 10 * time.Second, "", ""},
		{"UDP group, HTTP check (NLB: 6s, 200-399)", GroupConfig{Protocol: "UDP", Port: 53, HealthCheck: &HealthCheckConfig{Protocol: "HTTP"}}, 53, "HTTP", 30 * time.Second, 6 * time.Second, "200-399", "/"},
		{"TLS group, HTTPS check (NLB: 10s)", GroupConfig{Protocol: "TLS", Port: 443, HealthCheck: &HealthCheckConfig{Protocol: "HTTPS"}}, 443, "HTTPS", 30 * time.Second, 10 * time.Second, "200-399", "/"},
		{"lambda (35s/30s, disabled)", GroupConfig{Type: "lambda"}, 0, "HTTP", 35 * time.Second, 30 * time.Second, "200", "/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSpec(t, &tc.cfg)
			hc := s.HealthCheck
			if s.Config.Port != tc.port || hc.Probe.Protocol != tc.hcProto || hc.Interval != tc.interval || hc.Probe.Timeout != tc.timeout || hc.Probe.Path != tc.path {
				t.Errorf("got port %d, check %s every %s timeout %s path %q", s.Config.Port, hc.Probe.Protocol, hc.Interval, hc.Probe.Timeout, hc.Probe.Path)
			}
			if got := hc.Probe.Matcher.String(); tc.matcher != "" && got != tc.matcher {
				t.Errorf("matcher %q, want %q", got, tc.matcher)
			}
			if hc.HealthyThreshold != 5 || hc.UnhealthyThreshold != 2 {
				t.Errorf("thresholds %d/%d, want 5/2", hc.HealthyThreshold, hc.UnhealthyThreshold)
			}
			if hc.Enabled != (tc.cfg.Type != "lambda") {
				t.Errorf("enabled = %v", hc.Enabled)
			}
		})
	}
}

func TestAttributeDefaultsByProtocol(t *testing.T) {
	udp := mustSpec(t, &GroupConfig{Protocol: "UDP", Port: 53})
	tcp := mustSpec(t, &GroupConfig{Protocol: "TCP", Port: 5432})
	inst := mustSpec(t, &GroupConfig{Type: "instance", Protocol: "TCP", Port: 5432})
	web := mustSpec(t, &GroupConfig{})
	checks := []struct {
		spec      *Spec
		key, want string
	}{
		{udp, AttrConnectionTermination, "true"},
		{tcp, AttrConnectionTermination, "false"},
		{tcp, AttrPreserveClientIP, "false"},
		{inst, AttrPreserveClientIP, "true"},
		{udp, AttrPreserveClientIP, "true"},
		{tcp, AttrStickinessType, "source_ip"},
		{tcp, AttrDNSFailoverCount, "1"},
		{web, AttrDNSFailoverCount, "off"},
		{web, AttrStickinessType, "lb_cookie"},
		{web, AttrDeregistrationDelay, "300"},
		{web, AttrRoutingFailoverCount, "1"},
	}
	for _, c := range checks {
		if got := c.spec.Config.Attributes[c.key]; got != c.want {
			t.Errorf("%s %s = %q, want %q", c.spec.Config.Protocol, c.key, got, c.want)
		}
	}
	if _, ok := web.Config.Attributes[AttrProxyProtocolV2]; ok {
		t.Errorf("HTTP groups have no %s", AttrProxyProtocolV2)
	}
}

func TestValidationErrors(t *testing.T) {
	cases := []struct {
		cfg  GroupConfig
		want string
	}{
		{GroupConfig{HealthCheck: &HealthCheckConfig{Interval: Duration(4 * time.Second)}}, "health_check.interval: 4s is outside 5s-300s"},
		{GroupConfig{HealthCheck: &HealthCheckConfig{Interval: Duration(301 * time.Second)}}, "outside 5s-300s"},
		{GroupConfig{HealthCheck: &HealthCheckConfig{Timeout: Duration(500 * time.Millisecond)}}, "outside 1s-120s"},
		{GroupConfig{HealthCheck: &HealthCheckConfig{UnhealthyThreshold: 1}}, "health_check.unhealthy_threshold: 1 is outside 2-10"},
		{GroupConfig{HealthCheck: &HealthCheckConfig{Path: "health"}}, "must begin with"},
		{GroupConfig{HealthCheck: &HealthCheckConfig{Matcher: &MatcherConfig{GRPCCode: "0"}}}, "only gRPC health checks"},
		{GroupConfig{ProtocolVersion: "GRPC", HealthCheck: &HealthCheckConfig{Matcher: &MatcherConfig{GRPCCode: "100"}}}, "grpc_code"},
		{GroupConfig{Protocol: "TCP", Port: 1, ProtocolVersion: "HTTP2"}, "only HTTP and HTTPS groups have a protocol version"},
		{GroupConfig{Protocol: "TCP", Port: 1, HealthCheck: &HealthCheckConfig{Protocol: "TCP", Path: "/"}}, "TCP health checks have no path"},
		{GroupConfig{Protocol: "HTTP", HealthCheck: &HealthCheckConfig{ProtocolVersion: "GRPC"}}, "require the group's protocol_version GRPC"},
		{GroupConfig{Type: "alb", Protocol: "UDP", Port: 1}, "not supported for alb"},
		{GroupConfig{Type: "alb", ProtocolVersion: "HTTP2"}, "supported only for target types ip and instance"},
		{GroupConfig{Type: "lambda", IPAddressType: "ipv6"}, "not supported for lambda"},
		{GroupConfig{Type: "alb", IPAddressType: "ipv6"}, "ipv6 is supported only"},
		{GroupConfig{IPAddressType: "ipv5"}, "must be ipv4 or ipv6"},
		{GroupConfig{Port: 65536}, "outside 1-65535"},
		{GroupConfig{Protocol: "UDP", Port: 53, Attributes: map[string]string{AttrPreserveClientIP: "false"}}, "can't be disabled for UDP"},
		{GroupConfig{Protocol: "TCP", Port: 1, Attributes: map[string]string{AttrStickinessType: "lb_cookie"}}, "source_ip"},
		{GroupConfig{Attributes: map[string]string{AttrStickinessType: "source_ip"}}, "lb_cookie or app_cookie"},
		{GroupConfig{Attributes: map[string]string{AttrStickinessEnabled: "true", AttrStickinessType: "app_cookie"}}, "required when stickiness.type is app_cookie"},
		{GroupConfig{Attributes: map[string]string{AttrAppCookieName: "AWSALBAPP-1"}}, "reserved"},
		{GroupConfig{Attributes: map[string]string{AttrAnomalyMitigation: "on"}}, "weighted_random"},
		{GroupConfig{Protocol: "TCP", Port: 1, Attributes: map[string]string{AttrUnhealthyDrainingInterval: "10"}}, "can only be set when"},
		{GroupConfig{Protocol: "TCP", Port: 1, Attributes: map[string]string{AttrDNSFailoverCount: "1", AttrRoutingFailoverCount: "2"}}, "greater than or equal"},
		{GroupConfig{Attributes: map[string]string{AttrRoutingFailoverPercentage: "101"}}, `"off" or an integer within 1-100`},
		{GroupConfig{Type: "alb", Attributes: map[string]string{AttrDeregistrationDelay: "1"}}, "always use the default attributes"},
		{GroupConfig{Type: "lambda", Attributes: map[string]string{AttrDeregistrationDelay: "1"}}, "not supported for lambda groups"},
		{GroupConfig{Tags: map[string]string{"": "x"}}, "1-128 characters"},
		{GroupConfig{Tags: map[string]string{"k": strings.Repeat("v", 257)}}, "at most 256"},
		{GroupConfig{Tags: map[string]string{"k": "a<b"}}, "may contain only"},
		{GroupConfig{Targets: []TargetConfig{{ID: "127.0.0.1", Port: 1}, {ID: "127.0.0.1", Port: 1}}}, "listed twice"},
		{GroupConfig{Targets: []TargetConfig{{ID: "fe80::1%eth0"}}}, "not an IP address"},
		{GroupConfig{Type: "instance", Targets: []TargetConfig{{ID: "10.0.0.1"}}}, "instance targets are host names"},
		{GroupConfig{Type: "instance", Targets: []TargetConfig{{ID: "bad_host!"}}}, "not a valid DNS host name"},
		{GroupConfig{Type: "lambda", Targets: []TargetConfig{{ID: "fn", Port: 1}}}, "lambda targets have no port"},
		{GroupConfig{Type: "lambda", Targets: []TargetConfig{{ID: "arn:aws:s3:::bucket"}}}, "function ARN"},
		{GroupConfig{Type: "alb", Targets: []TargetConfig{{ID: "a.internal"}, {ID: "b.internal"}}}, "single target"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			_, err := NewSpec(&tc.cfg, mustCIDRs(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if !IsValidationError(err) {
				t.Fatalf("%v is not a ValidationError", err)
			}
		})
	}
}

func TestNewSpecDoesNotModifyItsInput(t *testing.T) {
	c := &GroupConfig{Attributes: map[string]string{AttrDeregistrationDelay: "30"}}
	mustSpec(t, c)
	if c.HealthCheck != nil || c.Port != 0 || len(c.Attributes) != 1 {
		t.Fatalf("input changed: %+v", c)
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"web", "a-b-c", "abc123", strings.Repeat("a", 128)} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "ab", "-web", "web-", "we--b", "Web", "we_b", "tg-web", strings.Repeat("a", 129)} {
		if err := ValidateName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestTargetAddresses(t *testing.T) {
	v4 := mustSpec(t, &GroupConfig{Port: 8080})
	v6 := mustSpec(t, &GroupConfig{IPAddressType: "ipv6"})
	allowed := mustCIDRs(t)
	for _, id := range []string{"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "::ffff:10.0.0.1"} {
		if _, err := v4.NormalizeTarget(TargetConfig{ID: id}, allowed); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	for _, id := range []string{"8.8.8.8", "172.32.0.1", "100.128.0.1", "169.254.1.1"} {
		if _, err := v4.NormalizeTarget(TargetConfig{ID: id}, allowed); err == nil {
			t.Errorf("%s accepted", id)
		}
	}
	for _, id := range []string{"::1", "fd00::1"} {
		if _, err := v6.NormalizeTarget(TargetConfig{ID: id}, allowed); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	if _, err := v6.NormalizeTarget(TargetConfig{ID: "2001:db8::1"}, allowed); err == nil {
		t.Error("a global IPv6 address was accepted")
	}
	got, _ := v4.NormalizeTarget(TargetConfig{ID: "127.0.0.1"}, allowed)
	if got.Port != 8080 {
		t.Errorf("port %d, want the group's 8080", got.Port)
	}
	custom, _ := ParseCIDRs([]string{"203.0.113.0/24"})
	if _, err := v4.NormalizeTarget(TargetConfig{ID: "203.0.113.9"}, custom); err != nil {
		t.Errorf("allowed_cidrs replaces the default: %v", err)
	}
	if _, err := v4.NormalizeTarget(TargetConfig{ID: "127.0.0.1"}, custom); err == nil {
		t.Error("allowed_cidrs should replace the default list")
	}
}

// An error about a key of attributes or tags names the key in its field,
// so that the Caddyfile finds its line, while the message reads as it
// always has; an attribute that another one requires names that one as
// its cause.
func TestKeyErrorsNameTheKey(t *testing.T) {
	for _, c := range []struct {
		cfg                 GroupConfig
		field, cause, error string
	}{
		{GroupConfig{Attributes: map[string]string{"foo.bar": "1"}}, "attributes.foo.bar", "",
			`attributes: unknown attribute key "foo.bar"; allowed keys for HTTP/HTTPS groups: `},
		{GroupConfig{Tags: map[string]string{"aws:owner": "me"}}, "tags.aws:owner", "",
			`tags: key "aws:owner" must not begin with "aws:" (reserved)`},
		{GroupConfig{Tags: map[string]string{"a<b": "x"}}, "tags.a<b", "",
			`tags: key "a<b" may contain only letters, digits, white space and _ . : / = + - @`},
		{GroupConfig{Attributes: map[string]string{AttrStickinessEnabled: "true", AttrStickinessType: "app_cookie"}},
			"attributes." + AttrAppCookieName, "attributes." + AttrStickinessType,
			"attributes.stickiness.app_cookie.cookie_name: required when stickiness.type is app_cookie"},
	} {
		_, err := NewSpec(&c.cfg, mustCIDRs(t))
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != c.field || ve.Cause != c.cause || !strings.HasPrefix(err.Error(), c.error) {
			t.Errorf("%+v: %#v, want field %q, cause %q and an error beginning %q", c.cfg, err, c.field, c.cause, c.error)
		}
	}
}
