package integration_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Lambda groups end to end: a Caddy built with xcaddy invokes a real
// aws-lambda-go function running in the real Runtime Interface Emulator.

// lambdaCaddy runs a Caddy whose lambda groups invoke the emulator at
// endpoint: fn-alb (ALB event), fn-mv (multi-value headers), fn-v1 and fn-v2
// (VPC Lattice's events), under /, /mv/, /v1/ and /v2/, and /api/ for
// fn-api, which the test creates through the admin API.
func lambdaCaddy(t *testing.T, endpoint, timeout string, groups map[string]any) *caddyProc {
	t.Helper()
	p := newCaddyProc(t)
	p.start(lambdaConfig(p, endpoint, timeout, groups))
	return p
}

// lambdaConfig is lambdaCaddy's config.
func lambdaConfig(p *caddyProc, endpoint, timeout string, groups map[string]any) []byte {
	all := map[string]any{
		"fn-alb": lambdaGroup(nil),
		"fn-mv":  lambdaGroup(map[string]any{"attributes": map[string]string{"lambda.multi_value_headers.enabled": "true"}}),
		"fn-v1":  lambdaGroup(map[string]any{"lambda_event_structure_version": "V1"}),
		"fn-v2":  lambdaGroup(map[string]any{"lambda_event_structure_version": "V2"}),
	}
	for k, v := range groups {
		all[k] = v
	}
	routes := []any{stripped("mv", "fn-mv"), stripped("v1", "fn-v1"), stripped("v2", "fn-v2"), stripped("api", "fn-api")}
	for name := range groups {
		routes = append(routes, stripped(name, name))
	}
	routes = append(routes, route("", tgHandler("fn-alb")))
	return p.expand(caddyConfig{
		groups: all,
		app:    map[string]any{"lambda": map[string]any{"endpoint": endpoint, "max_concurrent_invocations": 1, "timeout": timeout}},
		routes: routes,
	}.json())
}

func TestLambdaALBEvents(t *testing.T) {
	t.Parallel()
	bins := buildLambdaBins(t)
	p := lambdaCaddy(t, startRIE(t, bins), "30s", nil)
	base := "http://" + p.http
	_, caddyPort, _ := strings.Cut(p.http, ":")
	fn := p.group("fn-alb")

	t.Run("single-value event", func(t *testing.T) {
		a := send(t, "GET", base+"/echo/a%2Fb?x=1&x=2&y=a%20b&flag", nil, http.Header{"X-Multi": {"1", "2"}, "X-Forwarded-For": {"10.1.2.3"}})
		ev := event(t, a)
		if a.header.Get("X-Echo") != "yes" || a.header.Get("Content-Type") != "application/json" {
			t.Errorf("answer headers: %v", a.header)
		}
		if got := ev["requestContext"]; !reflect.DeepEqual(got, map[string]any{"elb": map[string]any{"targetGroupArn": fn.ARN}}) {
			t.Errorf("requestContext %v, want the ELBv2 ARN %s", got, fn.ARN)
		}
		if ev["httpMethod"] != "GET" || ev["path"] != "/echo/a%2Fb" || ev["body"] != "" || ev["isBase64Encoded"] != false {
			t.Errorf("method, path, body: %v %v %q %v", ev["httpMethod"], ev["path"], ev["body"], ev["isBase64Encoded"])
		}
		// The last value of each; values as sent, not decoded.
		if q := ev["queryStringParameters"]; !reflect.DeepEqual(q, map[string]any{"x": "2", "y": "a%20b", "flag": ""}) {
			t.Errorf("queryStringParameters %v", q)
		}
		if ev["multiValueHeaders"] != nil || ev["multiValueQueryStringParameters"] != nil {
			t.Errorf("multi-value fields without lambda.multi_value_headers.enabled: %v", ev)
		}
		h, _ := ev["headers"].(map[string]any)
		switch {
		case h["x-multi"] != "2":
			t.Errorf("x-multi %v, want the last value", h["x-multi"])
		case h["x-forwarded-for"] != "10.1.2.3, 127.0.0.1":
			t.Errorf("x-forwarded-for %v", h["x-forwarded-for"])
		case h["x-forwarded-port"] != caddyPort || h["x-forwarded-proto"] != "http":
			t.Errorf("x-forwarded-port %v (want %s), -proto %v", h["x-forwarded-port"], caddyPort, h["x-forwarded-proto"])
		case !strings.HasPrefix(fmt.Sprint(h["x-amzn-trace-id"]), "Root=1-"):
			t.Errorf("x-amzn-trace-id %v", h["x-amzn-trace-id"])
		case h["host"] != p.http:
			t.Errorf("host %v", h["host"])
		}
		for k := range h {
			if k != strings.ToLower(k) {
				t.Errorf("header name %q is not lower-case", k)
			}
		}
	})

	t.Run("multi-value event", func(t *testing.T) {
		ev := event(t, send(t, "GET", base+"/mv/echo?x=1&x=2&y=3", nil, http.Header{"X-Multi": {"1", "2"}}))
		if q := ev["multiValueQueryStringParameters"]; !reflect.DeepEqual(q, map[string]any{"x": []any{"1", "2"}, "y": []any{"3"}}) {
			t.Errorf("multiValueQueryStringParameters %v", q)
		}
		h, _ := ev["multiValueHeaders"].(map[string]any)
		if !reflect.DeepEqual(h["x-multi"], []any{"1", "2"}) || ev["headers"] != nil || ev["queryStringParameters"] != nil {
			t.Errorf("multiValueHeaders %v, headers %v", h, ev["headers"])
		}
		if ev["path"] != "/echo" {
			t.Errorf("path %v", ev["path"])
		}
	})

	t.Run("bodies", func(t *testing.T) {
		// Text types go as they are, others base64-encoded, as ALB.
		for _, ct := range []string{"text/plain; charset=utf-8", "application/json", "application/javascript", "application/xml"} {
			ev := event(t, send(t, "POST", base+"/echo", []byte(`{"hello": "wörld"}`), http.Header{"Content-Type": {ct}}))
			if ev["body"] != `{"hello": "wörld"}` || ev["isBase64Encoded"] != false {
				t.Errorf("%s body: %q base64 %v", ct, ev["body"], ev["isBase64Encoded"])
			}
		}
		bin := make([]byte, 256)
		for i := range bin {
			bin[i] = byte(255 - i)
		}
		ev := event(t, send(t, "POST", base+"/echo", bin, http.Header{"Content-Type": {"application/octet-stream"}}))
		if ev["body"] != base64.StdEncoding.EncodeToString(bin) || ev["isBase64Encoded"] != true {
			t.Errorf("binary body: %q base64 %v", ev["body"], ev["isBase64Encoded"])
		}
		// Both ways: the function answers the body it got.
		if a := send(t, "POST", base+"/echo-body", bin, http.Header{"Content-Type": {"image/png"}}); a.status != 200 || !bytes.Equal(a.body, bin) || a.header.Get("Content-Type") != "image/png" {
			t.Errorf("binary body back: %s %v", a, a.header)
		}
		if a := send(t, "POST", base+"/echo-body", []byte("plain text"), http.Header{"Content-Type": {"text/plain"}}); a.status != 200 || string(a.body) != "plain text" {
			t.Errorf("text body back: %s", a)
		}
		a := send(t, "GET", base+"/binary", nil, nil)
		if a.status != 200 || len(a.body) != 256 || a.body[0] != 0 || a.body[255] != 255 || a.header.Get("Content-Length") != "256" {
			t.Errorf("base64 answer: %s", a)
		}
	})

	t.Run("cookies", func(t *testing.T) {
		for _, path := range []string{"/cookies", "/mv/cookies"} {
			a := send(t, "GET", base+path, nil, nil)
			if got := a.header.Values("Set-Cookie"); a.status != 200 || !reflect.DeepEqual(got, []string{"a=1", "b=2", "c=3"}) {
				t.Errorf("%s: %s, Set-Cookie %q", path, a, got)
			}
		}
		// Both header fields: the group's mode picks one, as ALB's does,
		// and no header comes twice.
		for path, want := range map[string]struct {
			field   string
			cookies int
		}{"/both-headers": {"headers", 0}, "/mv/both-headers": {"multiValueHeaders", 2}} {
			a := send(t, "GET", base+path, nil, nil)
			if a.status != 200 || a.header.Get("X-Field") != want.field || len(a.header.Values("X-Field")) != 1 || len(a.header.Values("Set-Cookie")) != want.cookies || !reflect.DeepEqual(a.header.Values("Content-Type"), []string{"text/plain"}) {
				t.Errorf("%s: %s %v, want the %s field alone", path, a, a.header, want.field)
			}
		}
	})

	t.Run("no Content-Type", func(t *testing.T) {
		// /health-ua answers 400 with no headers: ALB's
		// application/octet-stream, not a type sniffed from the body.
		a := send(t, "GET", base+"/health-ua", nil, nil)
		if a.status != 400 || string(a.body) != "not a health check event" || a.header.Get("Content-Type") != "application/octet-stream" {
			t.Errorf("an answer without Content-Type: %s %v", a, a.header)
		}
	})

	t.Run("status codes", func(t *testing.T) {
		for _, code := range []int{200, 201, 302, 404, 418, 500, 503} {
			a := send(t, "GET", fmt.Sprintf("%s/status/%d", base, code), nil, nil)
			if a.status != code || string(a.body) != fmt.Sprintf("status %d", code) {
				t.Errorf("status %d: %s", code, a)
			}
		}
	})

	t.Run("function errors and malformed answers", func(t *testing.T) {
		if a := send(t, "GET", base+"/boom", nil, nil); a.status != 502 {
			t.Errorf("/boom: %s, want 502", a)
		}
		p.logHas(`"lambda invocation failed"`, `"function":"function"`, `"reason":"function error"`, "boom requested", `"status":502`)
		if a := send(t, "GET", base+"/malformed", nil, nil); a.status != 502 {
			t.Errorf("/malformed: %s, want 502", a)
		}
		p.logHas(`"lambda invocation failed"`, `"reason":"malformed answer"`)
		// A panic: the emulator answers HTTP 502 with the error, which is
		// the function's error, logged as such.
		if a := send(t, "GET", base+"/panic", nil, nil); a.status != 502 || len(a.body) != 0 {
			t.Errorf("/panic: %s, want an empty 502", a)
		}
		p.logHas(`"lambda invocation failed"`, `"reason":"function error"`, "panic requested", `"status":502`)
		event(t, send(t, "GET", base+"/after-panic", nil, nil))
		if a := send(t, "GET", base+"/status/99", nil, nil); a.status != 502 {
			t.Errorf("statusCode 99: %s, want 502", a)
		}
	})

	t.Run("limits and refused requests", func(t *testing.T) {
		big := bytes.Repeat([]byte("x"), 1<<20+1)
		if a := send(t, "POST", base+"/echo", big, http.Header{"Content-Type": {"text/plain"}}); a.status != 413 {
			t.Errorf("a body over 1 MB: %s, want 413", a)
		}
		if a := send(t, "POST", base+"/status/200", big[:1<<20], http.Header{"Content-Type": {"text/plain"}}); a.status != 200 {
			t.Errorf("a body of 1 MB: %s, want 200", a)
		}
		if a := send(t, "GET", base+"/echo", nil, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}); a.status != 400 {
			t.Errorf("a WebSocket upgrade: %s, want 400", a)
		}
		// The echo of a 1 MB body is more than the 1 MB of JSON ALB takes
		// back.
		if a := send(t, "POST", base+"/echo", big[:1<<20], http.Header{"Content-Type": {"text/plain"}}); a.status != 502 {
			t.Errorf("an answer over 1 MB: %s, want 502", a)
		}
		p.logHas(`"lambda invocation failed"`, `"reason":"answer too large"`)
	})

	t.Run("health checks off", func(t *testing.T) {
		h := p.describe("fn-alb")
		if st := h[0]; st.state != "unavailable" || st.reason != "Target.HealthCheckDisabled" {
			t.Errorf("DescribeTargetHealth of fn-alb: %+v", h)
		}
	})

	t.Run("concurrent requests, one invocation at a time", func(t *testing.T) {
		const n = 24
		var wg sync.WaitGroup
		codes := make([]int, n)
		for i := range n {
			wg.Go(func() {
				resp, err := http.Get(fmt.Sprintf("%s/sleep?d=20ms&i=%d", base, i))
				if err != nil {
					t.Errorf("request %d: %v", i, err)
					return
				}
				resp.Body.Close()
				codes[i] = resp.StatusCode
			})
		}
		wg.Wait()
		for i, c := range codes {
			if c != 200 {
				t.Errorf("request %d: %d", i, c)
			}
		}
		// The emulator survived.
		event(t, send(t, "GET", base+"/after", nil, nil))
	})

	t.Run("VPC Lattice V1", func(t *testing.T) {
		ev := event(t, send(t, "POST", base+"/v1/echo?x=1&x=2", []byte("hi"), http.Header{"Content-Type": {"text/plain"}, "X-Multi": {"1", "2"}}))
		h, _ := ev["headers"].(map[string]any)
		if ev["raw_path"] != "/echo" || ev["method"] != "POST" || ev["body"] != "hi" || ev["is_base64_encoded"] != false || h["x-multi"] != "1,2" {
			t.Errorf("V1 event: %v", ev)
		}
		if q := ev["query_string_parameters"]; !reflect.DeepEqual(q, map[string]any{"x": "2"}) {
			t.Errorf("V1 query_string_parameters %v", q)
		}
	})

	t.Run("VPC Lattice V2", func(t *testing.T) {
		v2 := p.group("fn-v2")
		ev := event(t, send(t, "GET", base+"/v2/echo?x=1", nil, http.Header{"X-Multi": {"1", "2"}}))
		h, _ := ev["headers"].(map[string]any)
		rc, _ := ev["requestContext"].(map[string]any)
		want := "arn:aws:vpc-lattice:us-east-1:000000000000:targetgroup/" + v2.ID
		if ev["version"] != "2.0" || ev["path"] != "/echo" || ev["method"] != "GET" || !reflect.DeepEqual(h["x-multi"], []any{"1", "2"}) {
			t.Errorf("V2 event: %v", ev)
		}
		if rc["targetGroupArn"] != want || rc["region"] != "us-east-1" || rc["timeEpoch"] == "" {
			t.Errorf("V2 requestContext %v, want targetGroupArn %s", rc, want)
		}
		if q := ev["queryStringParameters"]; !reflect.DeepEqual(q, map[string]any{"x": "1"}) {
			t.Errorf("V2 queryStringParameters %v", q)
		}
		if a := send(t, "GET", base+"/v2/cookies", nil, nil); len(a.header.Values("Set-Cookie")) != 3 {
			t.Errorf("V2 answer's cookies: %v", a.header)
		}
	})

	t.Run("group and function registered through the admin API", func(t *testing.T) {
		p.mustAPI("POST", "/target-groups/", map[string]any{"name": "fn-api", "type": "lambda"}, nil)
		p.mustAPI("POST", "/target-groups/fn-api/targets", map[string]any{"targets": []any{map[string]any{"id": "function"}}}, nil)
		api := p.group("fn-api")
		ev := event(t, send(t, "GET", base+"/api/echo", nil, nil))
		if rc := ev["requestContext"]; !reflect.DeepEqual(rc, map[string]any{"elb": map[string]any{"targetGroupArn": api.ARN}}) {
			t.Errorf("requestContext %v, want %s", rc, api.ARN)
		}
	})
}

// TestLambdaTimeouts: past lambda.timeout the client gets a 504, a
// function past its own timeout (the emulator's) is a 502, and the
// emulator serves the next request either way.
func TestLambdaTimeouts(t *testing.T) {
	t.Parallel()
	bins := buildLambdaBins(t)

	t.Run("lambda.timeout", func(t *testing.T) {
		p := lambdaCaddy(t, startRIE(t, bins, "AWS_LAMBDA_FUNCTION_TIMEOUT=30"), "1s", nil)
		// The function answers 200 once its 3s are over: a 504 is the
		// timeout's.
		if a := send(t, "GET", "http://"+p.http+"/sleep?d=3s", nil, nil); a.status != 504 {
			t.Errorf("past lambda.timeout: %s, want 504", a)
		}
		p.logHas(`"lambda invocation failed"`, `"reason":"invocation timed out"`, `"status":504`)
		// It waits for the sleeping invocation to end: the emulator runs
		// one at a time.
		event(t, send(t, "GET", "http://"+p.http+"/after", nil, nil))
	})

	t.Run("the function's own timeout", func(t *testing.T) {
		p := lambdaCaddy(t, startRIE(t, bins, "AWS_LAMBDA_FUNCTION_TIMEOUT=1"), "20s", nil)
		if a := send(t, "GET", "http://"+p.http+"/sleep?d=3s", nil, nil); a.status != 502 {
			t.Errorf("past the function's timeout: %s, want 502", a)
		}
		p.logHas(`"lambda invocation failed"`, `"reason":"function timed out"`, "Task timed out after 1.00 seconds")
		event(t, send(t, "GET", "http://"+p.http+"/after", nil, nil))
	})
}

// TestLambdaReload: a reload with lambda groups (one of them new) while a
// 504'd invocation still runs keeps the one-at-a-time limit (the emulator
// would crash on an overlapping invocation), each request's lease ends
// once, and the new group serves.
func TestLambdaReload(t *testing.T) {
	t.Parallel()
	bins := buildLambdaBins(t)
	endpoint := startRIE(t, bins, "AWS_LAMBDA_FUNCTION_TIMEOUT=30")
	p := lambdaCaddy(t, endpoint, "1s", nil)
	base := "http://" + p.http
	if a := send(t, "GET", base+"/sleep?d=3s", nil, nil); a.status != 504 {
		t.Fatalf("past lambda.timeout: %s, want 504", a)
	}
	// The client has its 504; the lease is over, the invocation is not.
	if d := p.describe("fn-alb")[0]; d.inFlight != 0 {
		t.Errorf("in flight after the 504: %d", d.inFlight)
	}
	p.reload(lambdaConfig(p, endpoint, "30s", map[string]any{"fn-new": lambdaGroup(nil)}))
	ev := event(t, send(t, "GET", base+"/fn-new/echo", nil, nil))
	if rc, want := ev["requestContext"], p.group("fn-new").ARN; !reflect.DeepEqual(rc, map[string]any{"elb": map[string]any{"targetGroupArn": want}}) {
		t.Errorf("fn-new: requestContext %v, want %s", rc, want)
	}
	event(t, send(t, "GET", base+"/after", nil, nil))
	if a := send(t, "GET", base+"/boom", nil, nil); a.status != 502 {
		t.Errorf("/boom: %s", a)
	}
	// fn-alb: the 504, /after and /boom, each counted once.
	got := (&instance{t: t, admin: p.admin}).scrape()
	total := 0
	for k, v := range got {
		if strings.HasPrefix(k, "caddy_target_group_requests_total{") && strings.Contains(k, `target_group="fn-alb"`) {
			n, _ := strconv.Atoi(v)
			total += n
		}
	}
	if total != 3 || got[`caddy_target_group_in_flight{target="function",target_group="fn-alb"}`] != "0" {
		t.Errorf("fn-alb: %d requests counted (want 3), in flight %q", total, got[`caddy_target_group_in_flight{target="function",target_group="fn-alb"}`])
	}
}

// TestLambdaHealthChecks: with health checks enabled, the function gets
// ALB's health-check event and its statusCode decides.
func TestLambdaHealthChecks(t *testing.T) {
	t.Parallel()
	bins := buildLambdaBins(t)
	hc := func(path, codes string) map[string]any {
		check := map[string]any{
			"enabled": true, "path": path, "interval": "5s", "timeout": "4s", "healthy_threshold": 2, "unhealthy_threshold": 2,
		}
		if codes != "" {
			check["matcher"] = map[string]any{"http_code": codes}
		}
		return lambdaGroup(map[string]any{"health_check": check})
	}
	p := lambdaCaddy(t, startRIE(t, bins), "30s", map[string]any{
		"hc-ok": hc("/health-ua", ""), "hc-bad": hc("/status/500", ""), "hc-matcher": hc("/status/404", "200,404"),
	})
	waitFor(t, "hc-ok and hc-matcher healthy, hc-bad unhealthy", 30*time.Second, func() bool {
		return p.describe("hc-ok")[0].state == "healthy" && p.describe("hc-matcher")[0].state == "healthy" && p.describe("hc-bad")[0].state == "unhealthy"
	})
	if st := p.describe("hc-bad")[0]; st.reason != "Target.ResponseCodeMismatch" {
		t.Errorf("hc-bad: %+v", st)
	}
	// No checks where they are off.
	if st := p.describe("fn-alb")[0]; st.state != "unavailable" {
		t.Errorf("fn-alb, health checks off: %+v", st)
	}
	var g struct {
		HealthCheck map[string]any `json:"health_check"`
	}
	p.mustAPI("GET", "/target-groups/fn-alb", nil, &g)
	if g.HealthCheck["enabled"] != false || g.HealthCheck["interval"] != "35s" || g.HealthCheck["timeout"] != "30s" {
		t.Errorf("lambda health-check defaults: %v", g.HealthCheck)
	}
	event(t, send(t, "GET", "http://"+p.http+"/hc-ok/echo", nil, nil))
	// An unhealthy function is still invoked: the group fails open.
	event(t, send(t, "GET", "http://"+p.http+"/hc-bad/echo", nil, nil))
	var h struct {
		RoutingFailover bool `json:"routing_failover"`
	}
	if code := (&instance{t: t, admin: p.admin}).api("GET", "/target-groups/hc-bad/health", nil, &h); code != http.StatusServiceUnavailable || !h.RoutingFailover {
		t.Errorf("hc-bad health: %d %+v, want 503 and routing_failover", code, h)
	}
}

// TestLambdaGroupUnderReverseProxy: reverse_proxy has no function to
// proxy to; the config is refused with the handler to use instead.
func TestLambdaGroupUnderReverseProxy(t *testing.T) {
	in := newInstance(t)
	err := in.load(caddyConfig{
		groups: map[string]any{"fn-rp": lambdaGroup(nil)},
		routes: []any{route("", map[string]any{"handler": "reverse_proxy", "dynamic_upstreams": map[string]any{"source": "target_group", "group": "fn-rp"}})},
	}.json())
	if err == nil {
		_ = caddy.Stop()
		t.Fatal("reverse_proxy to a lambda group loaded")
	}
	if !strings.Contains(err.Error(), `group "fn-rp" is of type lambda`) || !strings.Contains(err.Error(), "target_group handler") {
		t.Fatalf("error does not say what to use instead: %v", err)
	}
}
