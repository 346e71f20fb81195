package integration

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func testRequest() *lambdaRequest {
	return &lambdaRequest{
		ALBARN:     "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/fn/0123456789abcdef",
		LatticeARN: "arn:aws:vpc-lattice:us-east-1:000000000000:targetgroup/tg-0123456789abcdef0",
		Region:     "us-east-1",
		Method:     "POST",
		Path:       "/a%2Fb",
		RawQuery:   "x=1&x=2&y=a%20b&flag",
		Host:       "example.com",
		Header:     http.Header{"X-Multi": {"1", "2"}, "Content-Type": {"text/plain"}, "X-Forwarded-For": {"10.0.0.9"}},
		Body:       []byte("hello"),
		ClientIP:   "192.168.1.2",
		Port:       "8080",
		Proto:      "https",
		Now:        time.Unix(1700000000, 123456000),
	}
}

func decodeEvent(t *testing.T, req *lambdaRequest) map[string]any {
	t.Helper()
	b, err := buildEvent(req)
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestLambdaEventALB(t *testing.T) {
	ev := decodeEvent(t, testRequest())
	want := map[string]any{
		"requestContext":        map[string]any{"elb": map[string]any{"targetGroupArn": testRequest().ALBARN}},
		"httpMethod":            "POST",
		"path":                  "/a%2Fb",
		"queryStringParameters": map[string]any{"x": "2", "y": "a%20b", "flag": ""},
		"body":                  "hello",
		"isBase64Encoded":       false,
	}
	h := ev["headers"].(map[string]any)
	delete(ev, "headers")
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("event\n got %v\nwant %v", ev, want)
	}
	if !strings.HasPrefix(h["x-amzn-trace-id"].(string), "Root=1-6553f100-") {
		t.Errorf("trace id %v", h["x-amzn-trace-id"])
	}
	delete(h, "x-amzn-trace-id")
	wantH := map[string]any{"x-multi": "2", "content-type": "text/plain", "x-forwarded-for": "10.0.0.9, 192.168.1.2", "host": "example.com", "x-forwarded-port": "8080", "x-forwarded-proto": "https"}
	if !reflect.DeepEqual(h, wantH) {
		t.Errorf("headers\n got %v\nwant %v", h, wantH)
	}

	req := testRequest()
	req.MultiValue = true
	ev = decodeEvent(t, req)
	if ev["headers"] != nil || ev["queryStringParameters"] != nil {
		t.Errorf("single-value fields in a multi-value event: %v", ev)
	}
	if q := ev["multiValueQueryStringParameters"]; !reflect.DeepEqual(q, map[string]any{"x": []any{"1", "2"}, "y": []any{"a%20b"}, "flag": []any{""}}) {
		t.Errorf("multiValueQueryStringParameters %v", q)
	}
	if h := ev["multiValueHeaders"].(map[string]any); !reflect.DeepEqual(h["x-multi"], []any{"1", "2"}) {
		t.Errorf("multiValueHeaders %v", h)
	}
}

func TestLambdaEventBodies(t *testing.T) {
	for ct, text := range map[string]bool{
		"text/plain": true, "text/html; charset=utf-8": true, "application/json": true, "Application/JSON; charset=utf-8": true,
		"application/javascript": true, "application/xml": true, "application/octet-stream": false, "image/png": false,
		"application/x-www-form-urlencoded": false, "": false, "application/xhtml+xml": false,
	} {
		req := testRequest()
		req.Header = http.Header{"Content-Type": {ct}}
		req.Body = []byte{0, 1, 2, 'x'}
		ev := decodeEvent(t, req)
		wantBody := string(req.Body)
		if !text {
			wantBody = base64.StdEncoding.EncodeToString(req.Body)
		}
		if ev["body"] != wantBody || ev["isBase64Encoded"] != !text {
			t.Errorf("%q: body %q base64 %v", ct, ev["body"], ev["isBase64Encoded"])
		}
	}
	// Text in another charset than UTF-8 would lose its bytes in a JSON string.
	req := testRequest()
	req.Header = http.Header{"Content-Type": {"text/plain; charset=iso-8859-1"}}
	req.Body = []byte("caf\xe9")
	if ev := decodeEvent(t, req); ev["body"] != base64.StdEncoding.EncodeToString(req.Body) || ev["isBase64Encoded"] != true {
		t.Errorf("latin-1 text: %v", ev)
	}
	req.Body = nil
	req.Header = http.Header{"Content-Type": {"image/png"}}
	if ev := decodeEvent(t, req); ev["body"] != "" || ev["isBase64Encoded"] != false {
		t.Errorf("empty body: %v", ev)
	}
}

func TestLambdaEventLattice(t *testing.T) {
	req := testRequest()
	req.Version = eventV1
	ev := decodeEvent(t, req)
	h := ev["headers"].(map[string]any)
	if ev["raw_path"] != "/a%2Fb" || ev["method"] != "POST" || ev["body"] != "hello" || ev["is_base64_encoded"] != false || h["x-multi"] != "1,2" || ev["requestContext"] != nil {
		t.Errorf("V1 event %v", ev)
	}
	if q := ev["query_string_parameters"]; !reflect.DeepEqual(q, map[string]any{"x": "2", "y": "a%20b", "flag": ""}) {
		t.Errorf("V1 query %v", q)
	}

	req.Version = eventV2
	ev = decodeEvent(t, req)
	h = ev["headers"].(map[string]any)
	rc := ev["requestContext"].(map[string]any)
	if ev["version"] != "2.0" || ev["path"] != "/a%2Fb" || ev["method"] != "POST" || !reflect.DeepEqual(h["x-multi"], []any{"1", "2"}) || ev["isBase64Encoded"] != false {
		t.Errorf("V2 event %v", ev)
	}
	wantRC := map[string]any{"serviceNetworkArn": "", "serviceArn": "", "targetGroupArn": req.LatticeARN, "identity": map[string]any{"type": "NONE"}, "region": "us-east-1", "timeEpoch": "1700000000123456"}
	if !reflect.DeepEqual(rc, wantRC) {
		t.Errorf("V2 requestContext\n got %v\nwant %v", rc, wantRC)
	}

	req.Version = "V3"
	if _, err := buildEvent(req); err == nil || !strings.Contains(err.Error(), "V1, V2 or empty") {
		t.Errorf("V3: %v", err)
	}
}

func TestLambdaHealthCheckEvent(t *testing.T) {
	req := &lambdaRequest{ALBARN: "arn:x", Method: "GET", Path: "/ping", Header: http.Header{"User-Agent": {HealthCheckUserAgent}}, Check: true, Now: time.Now()}
	ev := decodeEvent(t, req)
	if h := ev["headers"]; !reflect.DeepEqual(h, map[string]any{"user-agent": "ELB-HealthChecker/2.0"}) {
		t.Errorf("health-check headers %v", h)
	}
	if ev["httpMethod"] != "GET" || ev["path"] != "/ping" || ev["body"] != "" || !reflect.DeepEqual(ev["queryStringParameters"], map[string]any{}) {
		t.Errorf("health-check event %v", ev)
	}
}

func TestLambdaAnswers(t *testing.T) {
	ok := func(payload, fe string, multi bool) *lambdaAnswer {
		t.Helper()
		a, fail := parseAnswer([]byte(payload), fe, albLambdaLimit, multi)
		if fail != nil {
			t.Fatalf("%s: %v", payload, fail)
		}
		return a
	}
	a := ok(`{"statusCode":201,"statusDescription":"201 Created","headers":{"content-type":"text/plain","x-a":"1","connection":"close","content-length":"99"},"body":"hi","isBase64Encoded":false}`, "", false)
	if a.status != 201 || string(a.body) != "hi" || a.header.Get("Content-Type") != "text/plain" || a.header.Get("X-A") != "1" || a.header.Get("Connection") != "" || a.header.Get("Content-Length") != "" {
		t.Errorf("answer %+v", a)
	}
	// With both fields, ALB reads the one of the group's mode only.
	both := `{"statusCode":200,"headers":{"content-type":"text/plain","x-a":"single","x-b":"b"},"multiValueHeaders":{"Content-Type":["text/plain"],"Set-Cookie":["a=1","b=2"],"x-a":["m1","m2"]},"body":"AAEC","isBase64Encoded":true}`
	a = ok(both, "", true)
	if !reflect.DeepEqual(a.header.Values("Set-Cookie"), []string{"a=1", "b=2"}) || !reflect.DeepEqual(a.header.Values("X-A"), []string{"m1", "m2"}) || a.header.Get("X-B") != "" || string(a.body) != "\x00\x01\x02" {
		t.Errorf("multi-value answer %+v", a)
	}
	if ct := a.header.Values("Content-Type"); !reflect.DeepEqual(ct, []string{"text/plain"}) {
		t.Errorf("multi-value answer: Content-Type %q, want it once", ct)
	}
	a = ok(both, "", false)
	if a.header.Get("Set-Cookie") != "" || !reflect.DeepEqual(a.header.Values("X-A"), []string{"single"}) || a.header.Get("X-B") != "b" || !reflect.DeepEqual(a.header.Values("Content-Type"), []string{"text/plain"}) {
		t.Errorf("single-value answer with both fields: %v", a.header)
	}
	// The other field alone still counts.
	a = ok(`{"statusCode":200,"headers":null,"multiValueHeaders":{"Set-Cookie":["a=1","b=2"]}}`, "", false)
	if !reflect.DeepEqual(a.header.Values("Set-Cookie"), []string{"a=1", "b=2"}) {
		t.Errorf("multiValueHeaders alone, single-value group: %v", a.header)
	}
	a = ok(`{"statusCode":200,"headers":{"X-A":"1"},"multiValueHeaders":null}`, "", true)
	if a.header.Get("X-A") != "1" {
		t.Errorf("headers alone, multi-value group: %v", a.header)
	}
	// Lattice V2 functions may answer headers as lists.
	a = ok(`{"statusCode":204,"headers":{"x-l":["1","2"]},"multiValueHeaders":null}`, "", false)
	if a.status != 204 || !reflect.DeepEqual(a.header.Values("X-L"), []string{"1", "2"}) || len(a.body) != 0 {
		t.Errorf("list headers %+v", a)
	}
	// No Content-Type: ALB's application/octet-stream, not a sniffed one;
	// none on answers that have no content.
	for payload, want := range map[string]string{
		`{"statusCode":200,"body":"<html>hi</html>"}`: "application/octet-stream",
		`{"statusCode":200}`:                          "application/octet-stream",
		`{"statusCode":204}`:                          "",
		`{"statusCode":304}`:                          "",
	} {
		if ct := ok(payload, "", false).header.Get("Content-Type"); ct != want {
			t.Errorf("%s: Content-Type %q, want %q", payload, ct, want)
		}
	}

	for _, tc := range []struct {
		payload, functionError, reason string
	}{
		{`{"errorMessage":"boom requested","errorType":"errorString"}`, "", reasonFunctionError},
		{`{"errorMessage":"boom","errorType":"errorString"}`, "Unhandled", reasonFunctionError},
		{`{"statusCode":200}`, "Handled", reasonFunctionError},
		{`{"errorMessage":"2026-12-02T05:00:00Z abc Task timed out after 3.00 seconds"}`, "Unhandled", reasonFunctionTimeout},
		{"Task timed out after 1.00 seconds", "", reasonFunctionTimeout},
		{`["not","a","response"]`, "", reasonMalformed},
		{`"text"`, "", reasonMalformed},
		{`null`, "", reasonMalformed},
		{`{"body":"no status"}`, "", reasonMalformed},
		{`{"statusCode":"200"}`, "", reasonMalformed},
		{`{"statusCode":99}`, "", reasonMalformed},
		{`{"statusCode":600}`, "", reasonMalformed},
		{`{"statusCode":200.5}`, "", reasonMalformed},
		{`{"statusCode":200,"headers":{"x":{"a":1}}}`, "", reasonMalformed},
		{`{"statusCode":200,"body":"%%%","isBase64Encoded":true}`, "", reasonMalformed},
		{`{"statusCode":200,"body":"` + strings.Repeat("x", albLambdaLimit) + `"}`, "", reasonTooLarge},
	} {
		_, fail := parseAnswer([]byte(tc.payload), tc.functionError, albLambdaLimit, false)
		if fail == nil || fail.reason != tc.reason || fail.status != http.StatusBadGateway {
			t.Errorf("%s (function error %q): %v, want %s (502)", clip(tc.payload), tc.functionError, fail, tc.reason)
		}
	}
	// Lattice takes up to 6 MB.
	if _, fail := parseAnswer([]byte(`{"statusCode":200,"body":"`+strings.Repeat("x", albLambdaLimit)+`"}`), "", lambdaLimit(eventV2), false); fail != nil {
		t.Errorf("a 1 MB answer of a Lattice group: %v", fail)
	}
}

func TestLambdaRegion(t *testing.T) {
	li := &lambdaInvoker{appRegion: "eu-west-1"}
	if r := li.region("function"); r != "eu-west-1" {
		t.Errorf("no other region: %s", r)
	}
	li.envRegion = "ap-south-1"
	if r := li.region("function"); r != "ap-south-1" {
		t.Errorf("AWS_REGION: %s", r)
	}
	if r := li.region("arn:aws:lambda:us-west-2:123456789012:function:f:prod"); r != "us-west-2" {
		t.Errorf("the ARN's region: %s", r)
	}
	li.cfg.Region = "sa-east-1"
	if r := li.region("arn:aws:lambda:us-west-2:123456789012:function:f"); r != "sa-east-1" {
		t.Errorf("lambda.region: %s", r)
	}
}
