package caddyfile

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// group wraps the lines of one group block named web in a global
// target_groups option; the group's first line is line 4 of the file.
func group(lines ...string) string {
	var b strings.Builder
	b.WriteString("{\n\ttarget_groups {\n\t\tweb {\n")
	for _, l := range lines {
		b.WriteString("\t\t\t" + l + "\n")
	}
	b.WriteString("\t\t}\n\t}\n}\n")
	return b.String()
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
		want  []string // substrings of the error, the first being file:line
	}{
		{"unknown option", group("port 80", "colour blue"),
			[]string{"Caddyfile:5", "unrecognized target group option 'colour'"}},
		{"unknown health_check option", group("health_check {", "\tpath /up", "\tretries 3", "}"),
			[]string{"Caddyfile:6", "unrecognized health_check option 'retries'"}},
		{"health_check bad argument", group("health_check on"),
			[]string{"Caddyfile:4", "expected 'off' or a block"}},
		{"health_check off with block", group("health_check off {", "\tpath /up", "}"),
			[]string{"Caddyfile:4", "health_check off takes no block"}},
		{"port without value", group("port"),
			[]string{"Caddyfile:4", "wrong argument count"}},
		{"target without value", group("target"),
			[]string{"Caddyfile:4", "wrong argument count"}},
		{"target with stray argument", group("target 10.0.0.1 us-east-1a"),
			[]string{"Caddyfile:4", "expected 'zone <availability zone>'"}},
		{"target zone without value", group("target 10.0.0.1 zone"),
			[]string{"Caddyfile:4", "wrong argument count"}},
		{"attribute without value", group("attribute stickiness.enabled"),
			[]string{"Caddyfile:4", "wrong argument count"}},
		{"two protocols", group("protocol HTTP HTTPS"),
			[]string{"Caddyfile:4", "wrong argument count"}},
		{"stickiness without type", group("stickiness"),
			[]string{"Caddyfile:4", "wrong argument count"}},
		{"app_cookie without name", group("stickiness app_cookie"),
			[]string{"Caddyfile:4", "wrong argument count"}},
		{"unknown stickiness", group("stickiness cookie"),
			[]string{"Caddyfile:4", "stickiness: unknown type 'cookie'"}},
		{"port not a number", group("type ip", "port abc"),
			[]string{"Caddyfile:5", "port: 'abc' is not an integer"}},
		{"bad node_id", "{\n\ttarget_groups {\n\t\tnode_id a/b\n\t}\n}",
			[]string{"Caddyfile:3", "node_id", "letters, digits"}},
		{"sync_interval too short", "{\n\ttarget_groups {\n\t\tsync_interval 1ms\n\t}\n}",
			[]string{"Caddyfile:3", "sync_interval", "10ms-1m"}},
		{"port zero", group("port 0"),
			[]string{"Caddyfile:4", "port: must not be 0"}},
		{"healthy_threshold not a number", group("health_check {", "\thealthy_threshold x", "}"),
			[]string{"Caddyfile:5", "healthy_threshold: 'x' is not an integer"}},
		{"interval not a duration", group("health_check {", "\tinterval banana", "}"),
			[]string{"Caddyfile:5", "interval:", "banana"}},
		{"enabled not a bool", group("health_check {", "\tenabled yes", "}"),
			[]string{"Caddyfile:5", "enabled: 'yes' must be true or false"}},
		{"health check port out of range", group("health_check {", "\tport 70000", "}"),
			[]string{"Caddyfile:5", "health_check.port"}},
		{"matcher kind", group("health_check {", "\tmatcher tcp 200", "}"),
			[]string{"Caddyfile:5", "matcher: unknown kind 'tcp'"}},
		{"deregistration_delay not whole seconds", group("deregistration_delay 1500ms"),
			[]string{"Caddyfile:4", "deregistration_delay: 1500ms is not a whole number of seconds"}},
		{"stickiness duration not whole seconds", group("stickiness lb_cookie 1.5s"),
			[]string{"Caddyfile:4", "stickiness: 1.5s is not a whole number of seconds"}},
		{"slow_start not a duration", group("slow_start soon"),
			[]string{"Caddyfile:4", "slow_start:"}},
		{"target port not a number", group("target 10.0.0.1:http"),
			[]string{"Caddyfile:4", "target: '10.0.0.1:http' has port 'http', which is not a number"}},
		{"duplicate scalar", group("port 80", "type ip", "port 81"),
			[]string{"Caddyfile:6", "duplicate port: already set on line 4"}},
		{"duplicate health_check field", group("health_check {", "\tpath /a", "\tpath /b", "}"),
			[]string{"Caddyfile:6", "duplicate health_check path: already set on line 5"}},
		{"duplicate health_check", group("health_check off", "health_check {", "\tpath /a", "}"),
			[]string{"Caddyfile:5", "duplicate health_check: already set on line 4"}},
		{"duplicate attribute via shorthand", group("deregistration_delay 30s", "attribute deregistration_delay.timeout_seconds 60"),
			[]string{"Caddyfile:5", `duplicate attribute "deregistration_delay.timeout_seconds": already set by 'deregistration_delay' on line 4`}},
		{"duplicate attribute via stickiness", group("attribute stickiness.enabled false", "stickiness lb_cookie"),
			[]string{"Caddyfile:5", `duplicate attribute "stickiness.enabled": already set by 'attribute' on line 4`}},
		{"duplicate stickiness", group("stickiness lb_cookie", "stickiness off"),
			[]string{"Caddyfile:5", `duplicate attribute "stickiness.enabled"`}},
		{"duplicate tag", group("tag env prod", "tag env dev"),
			[]string{"Caddyfile:5", `duplicate tag "env": already set on line 4`}},
		{"group declared twice across blocks", "{\n\ttarget_groups {\n\t\tweb\n\t}\n\ttarget_groups {\n\t\tweb {\n\t\t\tport 80\n\t\t}\n\t}\n}\n",
			[]string{"Caddyfile:6", `duplicate target group "web"`}},
		{"group declared twice in a block", "{\n\ttarget_groups {\n\t\tweb\n\t\tweb\n\t}\n}\n",
			[]string{"Caddyfile:4", `duplicate target group "web"`}},
		{"allowed_cidrs after a group", "{\n\ttarget_groups {\n\t\tweb\n\t\tallowed_cidrs 10.0.0.0/8\n\t}\n}\n",
			[]string{"Caddyfile:4", "allowed_cidrs must come before the target groups"}},
		{"allowed_cidrs without value", "{\n\ttarget_groups {\n\t\tallowed_cidrs\n\t}\n}\n",
			[]string{"Caddyfile:3", "wrong argument count"}},
		{"allowed_cidrs bad block", "{\n\ttarget_groups {\n\t\tallowed_cidrs 10.0.0.0/8 10.0.0.0\n\t}\n}\n",
			[]string{"Caddyfile:3", `allowed_cidrs[1]: "10.0.0.0" is not a CIDR block`}},
		{"option argument", "{\n\ttarget_groups web\n}\n",
			[]string{"Caddyfile:2", "wrong argument count"}},

		// Validation belongs to targetgroup; these check that its errors
		// come back with the line of the option they are about.
		{"validation: interval", group("type ip", "health_check {", "\tpath /up", "\tinterval 2s", "}"),
			[]string{"Caddyfile:7", `target group "web"`, "health_check.interval", "5s-300s"}},
		{"group option outside a group", "{\n\ttarget_groups {\n\t\tport 80\n\t}\n}\n",
			[]string{"Caddyfile:3", "wrong argument count"}},
		{"validation: group name", "{\n\ttarget_groups {\n\t\tweb\n\t\tWeb_1 {\n\t\t\tport 80\n\t\t}\n\t}\n}\n",
			[]string{"Caddyfile:4", `target group "Web_1": name:`, "a-z, 0-9 and hyphens"}},
		{"validation: protocol", group("port 80", "protocol SCTP"),
			[]string{"Caddyfile:5", "protocol", "SCTP"}},
		{"validation: matcher", group("health_check {", "\tinterval 10s", "\tmatcher 200-700", "}"),
			[]string{"Caddyfile:6", "health_check.matcher.http_code"}},
		{"validation: default timeout against interval", group("health_check {", "\tinterval 5s", "}", "port 80"),
			[]string{"Caddyfile:4", "health_check.timeout", "shorter than the interval"}},
		{"validation: attribute value", group("tag a b", "deregistration_delay 2h"),
			[]string{"Caddyfile:5", "attributes.deregistration_delay.timeout_seconds", "0-3600"}},
		{"validation: unknown attribute key", group("attribute stickiness.enabled true", "attribute foo.bar 1"),
			[]string{"Caddyfile:5", `unknown attribute key "foo.bar"`}},
		{"validation: stickiness for layer 4", group("protocol TCP", "port 5432", "stickiness lb_cookie"),
			[]string{"Caddyfile:6", "attributes.stickiness.type"}},
		{"validation: app_cookie without a name", group("attribute stickiness.enabled true", "attribute stickiness.type app_cookie"),
			[]string{"Caddyfile:5", "attributes.stickiness.app_cookie.cookie_name: required"}},
		{"validation: attributes of an alb group", group("type alb", "target lb.internal", "tag env prod", "algorithm least_outstanding_requests"),
			[]string{"Caddyfile:7", "load_balancing.algorithm.type"}},
		{"validation: tag key", group("tag env prod", "tag aws:owner me"),
			[]string{"Caddyfile:5", `"aws:owner"`}},
		{"validation: target", group("port 80", "target 10.0.0.1", "target 8.8.8.8:80"),
			[]string{"Caddyfile:6", "targets[1].id", "outside the allowed CIDR blocks"}},
		{"validation: duplicate target", group("target 10.0.0.1:80", "target 10.0.0.1"),
			[]string{"Caddyfile:5", "targets[1]", "listed twice"}},
		{"validation: one lambda target", group("type lambda", "target f1", "target f2"),
			[]string{"Caddyfile:6", "single target"}},
		{"validation: port of a lambda target", group("type lambda", "target function:9000"),
			[]string{"Caddyfile:5", "targets[0].port", "lambda targets have no port"}},
		{"handler: retries out of range", "{\n\ttarget_groups {\n\t\tweb\n\t}\n}\n:8080 {\n\ttarget_group web {\n\t\tretries 11\n\t}\n}\n",
			[]string{"Caddyfile:8", `retries must be off or 0-10, got "11"`}},
		{"handler: retries without value", "{\n\ttarget_groups {\n\t\tweb\n\t}\n}\n:8080 {\n\ttarget_group web {\n\t\tretries\n\t}\n}\n",
			[]string{"Caddyfile:8", "wrong argument count"}},
		{"handler: duplicate retries", "{\n\ttarget_groups {\n\t\tweb\n\t}\n}\n:8080 {\n\ttarget_group web {\n\t\tretries 1\n\t\tretries off\n\t}\n}\n",
			[]string{"Caddyfile:9", "duplicate option 'retries'"}},
		{"handler: unknown option", "{\n\ttarget_groups {\n\t\tweb\n\t}\n}\n:8080 {\n\ttarget_group web {\n\t\tport 80\n\t}\n}\n",
			[]string{"Caddyfile:8", "unrecognized option 'port' (allowed: retries)"}},
		{"lambda: unknown option", "{\n\ttarget_groups {\n\t\tlambda {\n\t\t\tfunction_name f\n\t\t}\n\t}\n}\n",
			[]string{"Caddyfile:4", "unrecognized option 'function_name' (allowed: endpoint, region, max_concurrent_invocations, timeout)"}},
		{"lambda: endpoint", "{\n\ttarget_groups {\n\t\tlambda {\n\t\t\tendpoint 127.0.0.1:9000\n\t\t}\n\t}\n}\n",
			[]string{"Caddyfile:4", "lambda.endpoint", "http:// or https://"}},
		{"lambda: timeout", "{\n\ttarget_groups {\n\t\tlambda {\n\t\t\ttimeout 1h\n\t\t}\n\t}\n}\n",
			[]string{"Caddyfile:4", "lambda.timeout", "1s-15m"}},
		{"lambda: negative concurrency", "{\n\ttarget_groups {\n\t\tlambda {\n\t\t\tmax_concurrent_invocations -1\n\t\t}\n\t}\n}\n",
			[]string{"Caddyfile:4", "max_concurrent_invocations", "0 (no limit)"}},
		{"lambda: twice", "{\n\ttarget_groups {\n\t\tlambda {\n\t\t}\n\t\tlambda {\n\t\t}\n\t}\n}\n",
			[]string{"Caddyfile:5", "duplicate lambda block"}},
		{"validation: event structure version", group("type lambda", "lambda_event_structure_version V3"),
			[]string{"Caddyfile:5", "lambda_event_structure_version", "V1 or V2"}},
		{"validation: event structure version of an ip group", group("port 80", "lambda_event_structure_version V1"),
			[]string{"Caddyfile:5", "lambda_event_structure_version", "only for lambda"}},
		{"validation: vpc_id", group("port 80", "vpc_id vpc-1"),
			[]string{"Caddyfile:5", "vpc_id", "vpc- and 8 or 17"}},
		{"validation: allowed_cidrs", "{\n\ttarget_groups {\n\t\tallowed_cidrs 192.168.0.0/16\n\t\tweb {\n\t\t\ttarget 10.0.0.1\n\t\t}\n\t}\n}\n",
			[]string{"Caddyfile:5", "outside the allowed CIDR blocks (192.168.0.0/16)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := adapt(tc.input)
			if err == nil {
				t.Fatalf("no error for\n%s", tc.input)
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestErrorLineInImport checks that errors in an imported file name that
// file and the import chain, as Caddy's own errors do.
func TestErrorLineInImport(t *testing.T) {
	input := "(groups) {\n\ttarget_groups {\n\t\tweb {\n\t\t\tinterval 1s\n\t\t}\n\t}\n}\n\n{\n\timport groups\n}\n"
	_, _, err := adapt(input)
	if err == nil || !strings.Contains(err.Error(), "Caddyfile:4") || !strings.Contains(err.Error(), "import chain") {
		t.Errorf("got %v; want an error at Caddyfile:4 with its import chain", err)
	}
}

// TestMergeUnexpectedValue covers a value left by something other than
// this parser, which only a broken build could produce.
func TestMergeUnexpectedValue(t *testing.T) {
	d := caddyfile.NewTestDispenser("target_groups {\n\tweb\n}")
	if _, err := parseTargetGroups(d, "oops"); err == nil || !strings.Contains(err.Error(), "unexpected type") {
		t.Errorf("got %v; want an unexpected type error", err)
	}
	d = caddyfile.NewTestDispenser("target_groups {\n\tweb\n}")
	prev := httpcaddyfile.App{Name: "target_groups", Value: []byte(`{"groups":{"web":{}}}`)}
	if _, err := parseTargetGroups(d, prev); err == nil || !strings.Contains(err.Error(), "Testfile:2") {
		t.Errorf("got %v; want a duplicate group error at Testfile:2", err)
	}
}
