package targetgroup_test

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup/adminapi"
)

// Tests of the ELBv2 Query dialect of the admin API, driven as the AWS
// clients drive it: form-encoded parameters, XML answers.

var (
	elbv2Handler      = new(adminapi.AdminAPI).Routes()[1].Handler // /elbv2
	elbv2SlashHandler = new(adminapi.AdminAPI).Routes()[2].Handler // /elbv2/
)

const elbv2NS = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"

// elbv2Request sends one request to the ELBv2 API of r (nil: no app
// running) as the SDKs do: POST /elbv2 with a form body.
func elbv2Request(t *testing.T, r *targetgroup.Registry, req *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	if r != nil {
		defer targetgroup.Use(r)()
	}
	h := elbv2Handler
	if req.URL.Path == "/elbv2/" {
		h = elbv2SlashHandler
	}
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, req); err != nil {
		t.Fatal(err)
	}
	return w
}

func elbv2Post(t *testing.T, r *targetgroup.Registry, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/elbv2", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	return elbv2Request(t, r, req)
}

// elbv2Form is an action's request body: Action, Version and the given
// parameters as name, value pairs.
func elbv2Form(action string, kv ...string) string {
	v := url.Values{"Action": {action}, "Version": {"2015-12-01"}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v.Encode()
}

// elbv2OK calls an action, which must succeed, and decodes its Result
// element into out (when not nil).
func elbv2OK(t *testing.T, r *targetgroup.Registry, out any, action string, kv ...string) {
	t.Helper()
	w := elbv2Post(t, r, elbv2Form(action, kv...))
	if w.Code != http.StatusOK {
		t.Fatalf("%s %v: %d %s", action, kv, w.Code, w.Body.Bytes())
	}
	var env struct {
		XMLName xml.Name
		Result  struct {
			XMLName xml.Name
			Inner   []byte `xml:",innerxml"`
		} `xml:",any"`
		RequestID string `xml:"ResponseMetadata>RequestId"`
	}
	if err := xml.Unmarshal(w.Body.Bytes(), &env); err != nil {
		t.Fatalf("%s: answer is not XML: %v: %s", action, err, w.Body.Bytes())
	}
	if env.XMLName != (xml.Name{Space: elbv2NS, Local: action + "Response"}) || env.Result.XMLName.Local != action+"Result" {
		t.Fatalf("%s: answer %s/%s, want %sResponse/%sResult in %s", action, env.XMLName.Local, env.Result.XMLName.Local, action, action, elbv2NS)
	}
	if env.RequestID == "" || requestIDHeader(w) != env.RequestID {
		t.Fatalf("%s: RequestId %q, header %q", action, env.RequestID, requestIDHeader(w))
	}
	if out != nil {
		// xml.Unmarshal appends to the slices of a value decoded before.
		reflect.ValueOf(out).Elem().SetZero()
		if err := xml.Unmarshal([]byte("<r>"+string(env.Result.Inner)+"</r>"), out); err != nil {
			t.Fatalf("%s: %v: %s", action, err, env.Result.Inner)
		}
	}
}

// requestIDHeader is the x-amzn-RequestId header, spelt as AWS spells it
// rather than in Go's canonical form.
func requestIDHeader(w *httptest.ResponseRecorder) string {
	if v := w.Header()["x-amzn-RequestId"]; len(v) == 1 {
		return v[0]
	}
	return ""
}

type elbv2ErrorBody struct {
	Type, Code, Message string
}

// elbv2Err decodes an error answer, checking its shape.
func elbv2Err(t *testing.T, w *httptest.ResponseRecorder) elbv2ErrorBody {
	t.Helper()
	var e struct {
		XMLName   xml.Name
		Error     elbv2ErrorBody
		RequestID string `xml:"RequestId"`
	}
	if err := xml.Unmarshal(w.Body.Bytes(), &e); err != nil || e.XMLName.Local != "ErrorResponse" || e.XMLName.Space != elbv2NS {
		t.Fatalf("error answer %d is no ErrorResponse: %v: %s", w.Code, err, w.Body.Bytes())
	}
	if e.RequestID == "" || requestIDHeader(w) != e.RequestID || w.Header().Get("Content-Type") != "text/xml" {
		t.Fatalf("error answer: RequestId %q, headers %v", e.RequestID, w.Header())
	}
	return e.Error
}

// elbv2Refused calls an action that must be refused with status and code,
// its message containing msg.
func elbv2Refused(t *testing.T, r *targetgroup.Registry, status int, code, msg, action string, kv ...string) {
	t.Helper()
	w := elbv2Post(t, r, elbv2Form(action, kv...))
	e := elbv2Err(t, w)
	fault := "Sender"
	if status >= 500 {
		fault = "Receiver"
	}
	if w.Code != status || e.Code != code || e.Type != fault || !strings.Contains(e.Message, msg) {
		t.Fatalf("%s %v: %d %+v, want %d %s %s with %q", action, kv, w.Code, e, status, fault, code, msg)
	}
}

type xmlGroup struct {
	TargetGroupArn, TargetGroupName, Protocol, VpcId, HealthCheckProtocol, HealthCheckPort, HealthCheckPath string
	TargetType, ProtocolVersion, IpAddressType                                                              string
	Port, HealthCheckIntervalSeconds, HealthCheckTimeoutSeconds                                             int
	HealthyThresholdCount, UnhealthyThresholdCount                                                          int
	HealthCheckEnabled                                                                                      bool
	Matcher                                                                                                 *struct{ HttpCode, GrpcCode string }
	LoadBalancerArns                                                                                        *struct {
		Member []string `xml:"member"`
	}
}

type xmlGroups struct {
	Groups     []xmlGroup `xml:"TargetGroups>member"`
	NextMarker string
}

type xmlHealth struct {
	Descriptions []struct {
		Target struct {
			Id               string
			Port             int
			AvailabilityZone string
		}
		HealthCheckPort  string
		TargetHealth     struct{ State, Reason, Description string }
		AnomalyDetection *struct{ Result, MitigationInEffect string }
	} `xml:"TargetHealthDescriptions>member"`
}

type xmlKeyValues struct {
	Attributes []struct{ Key, Value string } `xml:"Attributes>member"`
}

type xmlTags struct {
	Descriptions []struct {
		ResourceArn string
		Tags        []struct{ Key, Value string } `xml:"Tags>member"`
	} `xml:"TagDescriptions>member"`
}

func elbv2Group(t *testing.T, r *targetgroup.Registry, ref string) xmlGroup {
	t.Helper()
	var out xmlGroups
	elbv2OK(t, r, &out, "DescribeTargetGroups", "Names.member.1", ref)
	if len(out.Groups) != 1 {
		t.Fatalf("DescribeTargetGroups %s: %+v", ref, out)
	}
	return out.Groups[0]
}

// The envelope: both paths, POST bodies and GET query strings in any
// order, and each malformed request refused with the error the Query
// protocol's clients read.
func TestELBv2Envelope(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	elbv2OK(t, r, nil, "DescribeTargetGroups")

	for _, path := range []string{"/elbv2", "/elbv2/"} {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader("Version=2015-12-01&Names.member.1=web&Action=DescribeTargetGroups"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if w := elbv2Request(t, r, req); w.Code != http.StatusOK || w.Header().Get("Content-Type") != "text/xml" || !strings.Contains(w.Body.String(), "<TargetGroupName>web</TargetGroupName>") {
			t.Fatalf("POST %s: %d %v %s", path, w.Code, w.Header(), w.Body.Bytes())
		}
	}
	get := httptest.NewRequest(http.MethodGet, "/elbv2?Action=DescribeTargetGroupAttributes&TargetGroupArn=api&Version=2015-12-01", nil)
	if w := elbv2Request(t, r, get); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "<Key>deregistration_delay.timeout_seconds</Key><Value>30</Value>") {
		t.Fatalf("GET: %d %s", w.Code, w.Body.Bytes())
	}

	for _, c := range []struct {
		name, method, path, ctype, body string
		status                          int
		code, msg                       string
	}{
		{"unknown action", "POST", "/elbv2", "", "Action=CreateLoadBalancer&Version=2015-12-01", 400, "InvalidAction", `"CreateLoadBalancer" is not a target group action`},
		{"no action", "POST", "/elbv2", "", "Version=2015-12-01", 400, "MissingAction", "Action"},
		{"no version", "POST", "/elbv2", "", "Action=DescribeTargetGroups", 400, "MissingParameter", "Version (2015-12-01)"},
		{"old version", "POST", "/elbv2", "", "Action=DescribeTargetGroups&Version=2012-06-01", 400, "ValidationError", `Version: "2012-06-01" is not supported`},
		{"JSON protocol", "POST", "/elbv2", "application/x-amz-json-1.0", `{}`, 400, "ValidationError", "AWS Query protocol"},
		{"PUT", "PUT", "/elbv2", "", "", 405, "MethodNotAllowed", "POST"},
		{"sub path", "POST", "/elbv2/x", "", elbv2Form("DescribeTargetGroups"), 404, "InvalidAction", "/elbv2 itself"},
		{"bad encoding", "POST", "/elbv2", "", "Action=%zz", 400, "ValidationError", "URL-encoded"},
		{"given twice", "POST", "/elbv2", "", elbv2Form("DescribeTargetGroups") + "&PageSize=1&PageSize=2", 400, "ValidationError", "PageSize: given 2 times"},
		{"unknown parameter", "POST", "/elbv2", "", elbv2Form("DescribeTargetGroups", "PageSzie", "1"), 400, "ValidationError", "PageSzie: unknown parameter of DescribeTargetGroups, which takes LoadBalancerArn"},
		{"too large", "POST", "/elbv2", "", elbv2Form("DescribeTargetGroups") + "&Marker=" + strings.Repeat("a", maxBody), 413, "RequestEntityTooLarge", "exceeds 1048576 bytes"},
	} {
		req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if c.ctype != "" {
			req.Header.Set("Content-Type", c.ctype)
		}
		w := elbv2Request(t, r, req)
		if e := elbv2Err(t, w); w.Code != c.status || e.Code != c.code || e.Type != "Sender" || !strings.Contains(e.Message, c.msg) {
			t.Errorf("%s: %d %+v, want %d %s with %q", c.name, w.Code, e, c.status, c.code, c.msg)
		}
	}
	// No app running: a fault of the server's, which clients retry.
	elbv2Refused(t, nil, 503, "ServiceUnavailable", "target_groups app is not running", "DescribeTargetGroups")
}

// Every group operation's happy path, as the model shapes its answer.
func TestELBv2Groups(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	create := []string{"Name", "Web-Blue", "Protocol", "HTTP", "Port", "9100", "TargetType", "ip", "VpcId", "vpc-0123456789abcdef0",
		"HealthCheckPath", "/health", "HealthCheckIntervalSeconds", "10", "HealthCheckTimeoutSeconds", "4", "HealthyThresholdCount", "3",
		"Matcher.HttpCode", "200-299", "Tags.member.1.Key", "team", "Tags.member.1.Value", "web", "Tags.member.2.Key", "env", "Tags.member.2.Value", "dev"}
	var created xmlGroups
	elbv2OK(t, r, &created, "CreateTargetGroup", create...)
	if len(created.Groups) != 1 {
		t.Fatalf("CreateTargetGroup answered %+v", created)
	}
	g := created.Groups[0]
	want := xmlGroup{TargetGroupArn: g.TargetGroupArn, TargetGroupName: "Web-Blue", Protocol: "HTTP", Port: 9100, VpcId: "vpc-0123456789abcdef0",
		HealthCheckProtocol: "HTTP", HealthCheckPort: "traffic-port", HealthCheckEnabled: true, HealthCheckPath: "/health",
		HealthCheckIntervalSeconds: 10, HealthCheckTimeoutSeconds: 4, HealthyThresholdCount: 3, UnhealthyThresholdCount: 2,
		TargetType: "ip", ProtocolVersion: "HTTP1", IpAddressType: "ipv4"}
	if g.Matcher == nil || g.Matcher.HttpCode != "200-299" || g.LoadBalancerArns == nil || len(g.LoadBalancerArns.Member) != 0 {
		t.Fatalf("Matcher %+v, LoadBalancerArns %+v", g.Matcher, g.LoadBalancerArns)
	}
	g.Matcher, g.LoadBalancerArns = nil, nil
	if g != want || !strings.HasPrefix(g.TargetGroupArn, "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/Web-Blue/") {
		t.Fatalf("created\n%+v, want\n%+v", g, want)
	}
	// Idempotent: the same parameters, in another order, are the same group.
	for i, j := 0, len(create)-2; i < j; i, j = i+2, j-2 {
		create[i], create[i+1], create[j], create[j+1] = create[j], create[j+1], create[i], create[i+1]
	}
	var again xmlGroups
	elbv2OK(t, r, &again, "CreateTargetGroup", create...)
	if len(again.Groups) != 1 || again.Groups[0].TargetGroupArn != g.TargetGroupArn {
		t.Fatalf("repeated CreateTargetGroup: %+v", again)
	}

	// The model's default target type is instance.
	var inst xmlGroups
	elbv2OK(t, r, &inst, "CreateTargetGroup", "Name", "hosts", "Protocol", "HTTP", "Port", "80")
	if inst.Groups[0].TargetType != "instance" || inst.Groups[0].HealthCheckIntervalSeconds != 30 {
		t.Fatalf("default target type and interval: %+v", inst.Groups[0])
	}

	// Described by name, ARN or all; the filters and the shape agree.
	if d := elbv2Group(t, r, "Web-Blue"); d.TargetGroupArn != g.TargetGroupArn || d.HealthCheckIntervalSeconds != 10 {
		t.Fatalf("described %+v", d)
	}
	var byARN, all xmlGroups
	elbv2OK(t, r, &byARN, "DescribeTargetGroups", "TargetGroupArns.member.1", g.TargetGroupArn, "TargetGroupArns.member.2", "web")
	elbv2OK(t, r, &all, "DescribeTargetGroups")
	if len(byARN.Groups) != 2 || byARN.Groups[0].TargetGroupName != "Web-Blue" || byARN.Groups[1].TargetGroupName != "web" || len(all.Groups) != 4 {
		t.Fatalf("by ARN %+v; all %d groups", byARN, len(all.Groups))
	}
	var none xmlGroups
	elbv2OK(t, r, &none, "DescribeTargetGroups", "Names", "")
	if len(none.Groups) != 4 {
		t.Fatalf("Names= (an empty list) filters nothing: %+v", none)
	}

	// ModifyTargetGroup changes the health check parameters given.
	var modified xmlGroups
	elbv2OK(t, r, &modified, "ModifyTargetGroup", "TargetGroupArn", g.TargetGroupArn, "HealthCheckIntervalSeconds", "20", "HealthCheckPort", "9200", "Matcher.HttpCode", "204")
	m := modified.Groups[0]
	if m.HealthCheckIntervalSeconds != 20 || m.HealthCheckPort != "9200" || m.Matcher.HttpCode != "204" || m.HealthCheckPath != "/health" || m.HealthCheckTimeoutSeconds != 4 {
		t.Fatalf("modified %+v", m)
	}

	// Attributes.
	var attrs xmlKeyValues
	elbv2OK(t, r, &attrs, "ModifyTargetGroupAttributes", "TargetGroupArn", g.TargetGroupArn,
		"Attributes.member.1.Key", "deregistration_delay.timeout_seconds", "Attributes.member.1.Value", "0",
		"Attributes.member.2.Key", "stickiness.enabled", "Attributes.member.2.Value", "true")
	got := map[string]string{}
	for _, a := range attrs.Attributes {
		got[a.Key] = a.Value
	}
	if got["deregistration_delay.timeout_seconds"] != "0" || got["stickiness.enabled"] != "true" || got["load_balancing.algorithm.type"] != "round_robin" {
		t.Fatalf("attributes after modifying: %v", got)
	}
	var described xmlKeyValues
	elbv2OK(t, r, &described, "DescribeTargetGroupAttributes", "TargetGroupArn", g.TargetGroupArn)
	if !slices.Equal(described.Attributes, attrs.Attributes) || !slices.IsSortedFunc(described.Attributes, func(a, b struct{ Key, Value string }) int { return strings.Compare(a.Key, b.Key) }) {
		t.Fatalf("described attributes %v, modified %v", described.Attributes, attrs.Attributes)
	}

	// Tags: add (overwrite), remove, describe.
	elbv2OK(t, r, nil, "AddTags", "ResourceArns.member.1", g.TargetGroupArn, "ResourceArns.member.2", "api",
		"Tags.member.1.Key", "env", "Tags.member.1.Value", "prod", "Tags.member.2.Key", "owner", "Tags.member.2.Value", "")
	elbv2OK(t, r, nil, "RemoveTags", "ResourceArns.member.1", g.TargetGroupArn, "TagKeys.member.1", "team", "TagKeys.member.2", "absent")
	var tags xmlTags
	elbv2OK(t, r, &tags, "DescribeTags", "ResourceArns.member.1", g.TargetGroupArn, "ResourceArns.member.2", "api")
	if len(tags.Descriptions) != 2 || tags.Descriptions[0].ResourceArn != g.TargetGroupArn ||
		fmt.Sprint(tags.Descriptions[0].Tags) != "[{env prod} {owner }]" || fmt.Sprint(tags.Descriptions[1].Tags) != "[{env prod} {owner }]" {
		t.Fatalf("tags %+v", tags)
	}

	// Delete, twice: a missing group is deleted already.
	elbv2OK(t, r, nil, "DeleteTargetGroup", "TargetGroupArn", g.TargetGroupArn)
	elbv2OK(t, r, nil, "DeleteTargetGroup", "TargetGroupArn", g.TargetGroupArn)
	elbv2Refused(t, r, 400, "TargetGroupNotFound", `"Web-Blue"`, "DescribeTargetGroups", "Names.member.1", "Web-Blue")
}

// Every target operation's happy path, lambda targets included.
func TestELBv2Targets(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	elbv2OK(t, r, nil, "RegisterTargets", "TargetGroupArn", "api",
		"Targets.member.1.Id", "10.0.0.2", "Targets.member.1.Port", "9001", "Targets.member.1.AvailabilityZone", "a",
		"Targets.member.2.Id", "10.0.0.3")
	var h xmlHealth
	elbv2OK(t, r, &h, "DescribeTargetHealth", "TargetGroupArn", "api")
	var ids []string
	for _, d := range h.Descriptions {
		ids = append(ids, fmt.Sprintf("%s:%d/%s/%s/%s", d.Target.Id, d.Target.Port, d.Target.AvailabilityZone, d.HealthCheckPort, d.TargetHealth.State))
		if d.AnomalyDetection != nil {
			t.Fatalf("anomaly detection answered without Include: %+v", d)
		}
	}
	if fmt.Sprint(ids) != "[10.0.0.1:9000//9000/initial 10.0.0.2:9001/a/9001/initial 10.0.0.3:9000//9000/initial]" {
		t.Fatalf("targets %v", ids)
	}
	// A filter: a target not registered is unused, the waiters' signal.
	var f xmlHealth
	elbv2OK(t, r, &f, "DescribeTargetHealth", "TargetGroupArn", "api", "Targets.member.1.Id", "10.0.0.9", "Targets.member.2.Id", "10.0.0.2", "Targets.member.2.Port", "9001")
	if len(f.Descriptions) != 2 || f.Descriptions[0].TargetHealth.State != "unused" || f.Descriptions[0].TargetHealth.Reason != "Target.NotRegistered" ||
		f.Descriptions[0].Target.Port != 9000 || f.Descriptions[1].TargetHealth.State != "initial" {
		t.Fatalf("filtered %+v", f)
	}
	var empty xmlHealth
	elbv2OK(t, r, &empty, "DescribeTargetHealth", "TargetGroupArn", "api", "Targets", "", "Include", "")
	if len(empty.Descriptions) != 3 {
		t.Fatalf("Targets= is no filter: %+v", empty)
	}

	// Deregistering drains; a target never registered is no error.
	elbv2OK(t, r, nil, "DeregisterTargets", "TargetGroupArn", "api", "Targets.member.1.Id", "10.0.0.2", "Targets.member.1.Port", "9001", "Targets.member.2.Id", "10.0.0.77")
	elbv2OK(t, r, &f, "DescribeTargetHealth", "TargetGroupArn", "api", "Targets.member.1.Id", "10.0.0.2", "Targets.member.1.Port", "9001")
	if s := f.Descriptions[0].TargetHealth; s.State != "draining" || s.Reason != "Target.DeregistrationInProgress" {
		t.Fatalf("deregistered target %+v", s)
	}

	// Include asks for anomaly detection, which weighted_random groups have.
	elbv2OK(t, r, nil, "CreateTargetGroup", "Name", "weighted", "TargetType", "ip", "Port", "9300")
	elbv2OK(t, r, nil, "ModifyTargetGroupAttributes", "TargetGroupArn", "weighted", "Attributes.member.1.Key", "load_balancing.algorithm.type", "Attributes.member.1.Value", "weighted_random")
	elbv2OK(t, r, nil, "RegisterTargets", "TargetGroupArn", "weighted", "Targets.member.1.Id", "10.0.0.5")
	elbv2OK(t, r, &h, "DescribeTargetHealth", "TargetGroupArn", "weighted", "Include.member.1", "AnomalyDetection")
	if a := h.Descriptions[0].AnomalyDetection; a == nil || a.Result != "normal" || a.MitigationInEffect != "no" {
		t.Fatalf("anomaly detection %+v", h.Descriptions)
	}

	// A lambda group: its one target is a function, without a port.
	var lg xmlGroups
	elbv2OK(t, r, &lg, "CreateTargetGroup", "Name", "fn", "TargetType", "lambda")
	// As AWS describes one: no protocol or port, of the group or its check.
	if g := lg.Groups[0]; g.TargetType != "lambda" || g.Port != 0 || g.Protocol != "" || g.HealthCheckEnabled || g.HealthCheckIntervalSeconds != 35 ||
		g.HealthCheckTimeoutSeconds != 30 || g.HealthCheckProtocol != "" || g.HealthCheckPort != "" || g.IpAddressType != "ipv4" || g.VpcId != "" {
		t.Fatalf("lambda group %+v", g)
	}
	arn := "arn:aws:lambda:us-east-1:123456789012:function:echo"
	elbv2OK(t, r, nil, "RegisterTargets", "TargetGroupArn", lg.Groups[0].TargetGroupArn, "Targets.member.1.Id", arn)
	elbv2OK(t, r, &h, "DescribeTargetHealth", "TargetGroupArn", "fn")
	if len(h.Descriptions) != 1 || h.Descriptions[0].Target.Id != arn || h.Descriptions[0].Target.Port != 0 || h.Descriptions[0].HealthCheckPort != "" ||
		h.Descriptions[0].TargetHealth.State != "unavailable" {
		t.Fatalf("lambda target %+v", h.Descriptions)
	}
	elbv2Refused(t, r, 400, "TooManyTargets", "single target", "RegisterTargets", "TargetGroupArn", "fn", "Targets.member.1.Id", "other")
}

// ModifyTargetGroup moves a layer 4 group's health check between TCP and
// HTTP, and changes a gRPC group's matcher, as AWS does.
func TestELBv2ModifyHealthCheck(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	var out xmlGroups
	elbv2OK(t, r, &out, "CreateTargetGroup", "Name", "nlb", "TargetType", "ip", "Protocol", "TCP", "Port", "5000", "HealthCheckPort", "8080")
	if g := out.Groups[0]; g.HealthCheckProtocol != "TCP" || g.HealthCheckPath != "" || g.Matcher != nil || g.HealthCheckPort != "8080" {
		t.Fatalf("created %+v", g)
	}
	elbv2OK(t, r, &out, "ModifyTargetGroup", "TargetGroupArn", "nlb", "HealthCheckProtocol", "HTTP", "HealthCheckPath", "/ping")
	if g := out.Groups[0]; g.HealthCheckProtocol != "HTTP" || g.HealthCheckPath != "/ping" || g.Matcher == nil || g.Matcher.HttpCode != "200-399" {
		t.Fatalf("to HTTP %+v", g)
	}
	// Back to TCP: the HTTP check's path and matcher go with it.
	elbv2OK(t, r, &out, "ModifyTargetGroup", "TargetGroupArn", "nlb", "HealthCheckProtocol", "TCP", "UnhealthyThresholdCount", "4")
	if g := out.Groups[0]; g.HealthCheckProtocol != "TCP" || g.HealthCheckPath != "" || g.Matcher != nil || g.UnhealthyThresholdCount != 4 || g.HealthCheckPort != "8080" {
		t.Fatalf("back to TCP %+v", g)
	}
	elbv2Refused(t, r, 400, "ValidationError", "HealthCheckPath: TCP health checks have no path", "ModifyTargetGroup", "TargetGroupArn", "nlb", "HealthCheckProtocol", "TCP", "HealthCheckPath", "/x")
	elbv2Refused(t, r, 400, "ValidationError", "TCP health checks are not supported for HTTP groups", "ModifyTargetGroup", "TargetGroupArn", "api", "HealthCheckProtocol", "TCP")

	elbv2OK(t, r, &out, "CreateTargetGroup", "Name", "grpc", "TargetType", "ip", "Protocol", "HTTP", "ProtocolVersion", "GRPC", "Port", "50051")
	if g := out.Groups[0]; g.Matcher == nil || g.Matcher.GrpcCode != "12" || g.Matcher.HttpCode != "" || g.HealthCheckPath != "/AWS.ALB/healthcheck" {
		t.Fatalf("gRPC group %+v %+v", g, g.Matcher)
	}
	elbv2OK(t, r, &out, "ModifyTargetGroup", "TargetGroupArn", "grpc", "Matcher.GrpcCode", "0-99", "HealthCheckPort", "traffic-port")
	if g := out.Groups[0]; g.Matcher == nil || g.Matcher.GrpcCode != "0-99" || g.HealthCheckPort != "traffic-port" {
		t.Fatalf("gRPC matcher %+v", g.Matcher)
	}
	elbv2Refused(t, r, 400, "ValidationError", "Matcher.HttpCode: gRPC health checks match grpc_code", "ModifyTargetGroup", "TargetGroupArn", "grpc", "Matcher.HttpCode", "200")
}

// A tag call naming several groups changes all of them or none: a group
// the config owns, named after one it does not, is refused first.
func TestELBv2TagsAllOrNothing(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	elbv2OK(t, r, nil, "AddTags", "ResourceArns.member.1", "api", "Tags.member.1.Key", "env", "Tags.member.1.Value", "dev")
	elbv2Refused(t, r, 400, "OperationNotPermitted", `"web" is declared in the config`, "AddTags",
		"ResourceArns.member.1", "api", "ResourceArns.member.2", "web", "Tags.member.1.Key", "env", "Tags.member.1.Value", "prod")
	elbv2Refused(t, r, 400, "OperationNotPermitted", `"web" is declared in the config`, "RemoveTags",
		"ResourceArns.member.1", "api", "ResourceArns.member.2", "web", "TagKeys.member.1", "env")
	var tags xmlTags
	elbv2OK(t, r, &tags, "DescribeTags", "ResourceArns.member.1", "api")
	if fmt.Sprint(tags.Descriptions[0].Tags) != "[{env dev}]" {
		t.Fatalf("refused tag calls changed api's tags: %+v", tags)
	}
}

// Refused calls answer the code the model gives, name the parameter and
// what it allows, and change nothing.
func TestELBv2Refusals(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	before := targetgroup.Fingerprint(t, r)
	for _, c := range []struct {
		code, msg, action string
		kv                []string
	}{
		{"MissingParameter", "parameter Name", "CreateTargetGroup", nil},
		{"ValidationError", `Name: "-web" must not begin or end with a hyphen`, "CreateTargetGroup", []string{"Name", "-web"}},
		{"ValidationError", "Name: ", "CreateTargetGroup", []string{"Name", strings.Repeat("a", 33)}},
		{"DuplicateTargetGroupName", `"api" already exists with other settings`, "CreateTargetGroup", []string{"Name", "api", "TargetType", "ip", "Port", "9001"}},
		{"ValidationError", "HealthCheckIntervalSeconds: 4 is outside 5-300", "CreateTargetGroup", []string{"Name", "x", "HealthCheckIntervalSeconds", "4"}},
		{"ValidationError", "HealthCheckTimeoutSeconds: 1 is outside 2-120", "CreateTargetGroup", []string{"Name", "x", "HealthCheckTimeoutSeconds", "1"}},
		{"ValidationError", "HealthCheckTimeoutSeconds: 30s must be shorter than the interval 10s", "CreateTargetGroup", []string{"Name", "x", "HealthCheckIntervalSeconds", "10", "HealthCheckTimeoutSeconds", "30"}},
		{"ValidationError", "Port: \"http\" is not an integer (1-65535)", "CreateTargetGroup", []string{"Name", "x", "Port", "http"}},
		{"ValidationError", `Protocol: "GENEVE" must be one of HTTP, HTTPS, TCP, TLS, UDP, TCP_UDP`, "CreateTargetGroup", []string{"Name", "x", "Protocol", "GENEVE", "Port", "6081"}},
		{"ValidationError", `TargetType: "lambda2" must be one of ip, instance, alb, lambda`, "CreateTargetGroup", []string{"Name", "x", "TargetType", "lambda2"}},
		{"ValidationError", `HealthCheckEnabled: "yes" must be true or false`, "CreateTargetGroup", []string{"Name", "x", "HealthCheckEnabled", "yes"}},
		{"ValidationError", "TargetControlPort: not supported", "CreateTargetGroup", []string{"Name", "x", "TargetControlPort", "9"}},
		{"DuplicateTagKeys", `"env" is given more than once`, "CreateTargetGroup", []string{"Name", "x", "Tags.member.1.Key", "env", "Tags.member.2.Key", "env"}},
		{"ValidationError", `Tags: key "aws:x" must not begin with "aws:"`, "CreateTargetGroup", []string{"Name", "x", "Tags.member.1.Key", "aws:x"}},
		{"ValidationError", "Tags.member.1.Colour: Tags has no field \"Colour\"; its fields are Key, Value", "CreateTargetGroup", []string{"Name", "x", "Tags.member.1.Colour", "red"}},
		{"ValidationError", `Targets.member.0.Id: the member number "0" must be an integer from 1`, "RegisterTargets", []string{"TargetGroupArn", "api", "Targets.member.0.Id", "10.0.0.2"}},
		{"LoadBalancerNotFound", "Caddy has no load balancers", "DescribeTargetGroups", []string{"LoadBalancerArn", "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/x/1"}},
		{"ValidationError", "give at most one of them", "DescribeTargetGroups", []string{"Names.member.1", "api", "TargetGroupArns.member.1", "web"}},
		{"TargetGroupNotFound", `"nosuch"`, "DescribeTargetGroups", []string{"Names.member.1", "api", "Names.member.2", "nosuch"}},
		{"TargetGroupNotFound", `"nosuch"`, "ModifyTargetGroup", []string{"TargetGroupArn", "nosuch", "HealthCheckPath", "/x"}},
		{"MissingParameter", "TargetGroupArn", "ModifyTargetGroup", []string{"HealthCheckPath", "/x"}},
		{"OperationNotPermitted", `"web" is declared in the config`, "ModifyTargetGroup", []string{"TargetGroupArn", "web", "HealthCheckPath", "/x"}},
		{"ValidationError", `HealthCheckPath: "x" must begin with "/"`, "ModifyTargetGroup", []string{"TargetGroupArn", "api", "HealthCheckPath", "x"}},
		{"ValidationError", `HealthCheckPort: "0" must be traffic-port or a port within 1-65535`, "ModifyTargetGroup", []string{"TargetGroupArn", "api", "HealthCheckPort", "0"}},
		{"ValidationError", "Matcher: give HttpCode or GrpcCode, not both", "ModifyTargetGroup", []string{"TargetGroupArn", "api", "Matcher.HttpCode", "200", "Matcher.GrpcCode", "0"}},
		{"OperationNotPermitted", `"web" is declared in the config`, "DeleteTargetGroup", []string{"TargetGroupArn", "web"}},
		{"InvalidTarget", `Targets.member.2.Id: 8.8.8.8 is outside the allowed CIDR blocks`, "RegisterTargets", []string{"TargetGroupArn", "api", "Targets.member.1.Id", "10.0.0.2", "Targets.member.2.Id", "8.8.8.8"}},
		{"InvalidTarget", `Targets.member.1.Port: "70000" must be a port within 1-65535`, "RegisterTargets", []string{"TargetGroupArn", "api", "Targets.member.1.Id", "10.0.0.2", "Targets.member.1.Port", "70000"}},
		{"InvalidTarget", "QuicServerId: not supported", "RegisterTargets", []string{"TargetGroupArn", "api", "Targets.member.1.Id", "10.0.0.2", "Targets.member.1.QuicServerId", "0x1"}},
		{"MissingParameter", "Targets.member.1.Id", "RegisterTargets", []string{"TargetGroupArn", "api", "Targets.member.1.Port", "80"}},
		{"MissingParameter", "Targets", "RegisterTargets", []string{"TargetGroupArn", "api"}},
		{"ValidationError", "Targets: at least one target is required", "RegisterTargets", []string{"TargetGroupArn", "api", "Targets", ""}},
		{"ValidationError", `Targets: a list is sent as Targets.member.1`, "RegisterTargets", []string{"TargetGroupArn", "api", "Targets", "10.0.0.2"}},
		{"TargetGroupNotFound", `"nosuch"`, "RegisterTargets", []string{"TargetGroupArn", "nosuch", "Targets.member.1.Id", "10.0.0.2"}},
		{"OperationNotPermitted", "declared in the config", "DeregisterTargets", []string{"TargetGroupArn", "web", "Targets.member.1.Id", "127.0.0.1", "Targets.member.1.Port", "1"}},
		{"ValidationError", `Include.member.1: "Everything" must be AnomalyDetection or All`, "DescribeTargetHealth", []string{"TargetGroupArn", "api", "Include.member.1", "Everything"}},
		{"InvalidConfigurationRequest", `Attributes (key "stickiness.enabled"): `, "ModifyTargetGroupAttributes", []string{"TargetGroupArn", "api", "Attributes.member.1.Key", "stickiness.enabled", "Attributes.member.1.Value", "maybe"}},
		{"InvalidConfigurationRequest", "unknown attribute key", "ModifyTargetGroupAttributes", []string{"TargetGroupArn", "api", "Attributes.member.1.Key", "colour", "Attributes.member.1.Value", "blue"}},
		{"MissingParameter", "Attributes", "ModifyTargetGroupAttributes", []string{"TargetGroupArn", "api"}},
		{"OperationNotPermitted", "declared in the config", "ModifyTargetGroupAttributes", []string{"TargetGroupArn", "web", "Attributes.member.1.Key", "stickiness.enabled", "Attributes.member.1.Value", "true"}},
		{"TargetGroupNotFound", `"nosuch"`, "AddTags", []string{"ResourceArns.member.1", "api", "ResourceArns.member.2", "nosuch", "Tags.member.1.Key", "k"}},
		{"LoadBalancerNotFound", "only ELBv2 resources are target groups", "AddTags", []string{"ResourceArns.member.1", "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/a/1", "Tags.member.1.Key", "k"}},
		{"MissingParameter", "Tags", "AddTags", []string{"ResourceArns.member.1", "api"}},
		{"OperationNotPermitted", "declared in the config", "AddTags", []string{"ResourceArns.member.1", "web", "Tags.member.1.Key", "k"}},
		// All or nothing: api, named first, keeps its tags.
		{"OperationNotPermitted", `"web" is declared in the config`, "AddTags", []string{"ResourceArns.member.1", "api", "ResourceArns.member.2", "web", "Tags.member.1.Key", "k"}},
		{"MissingParameter", "TagKeys", "RemoveTags", []string{"ResourceArns.member.1", "api"}},
		{"MissingParameter", "ResourceArns", "DescribeTags", nil},
		{"ValidationError", "give at most 20", "DescribeTags", tooManyARNs(21)},
	} {
		elbv2Refused(t, r, 400, c.code, c.msg, c.action, c.kv...)
	}
	tooMany := []string{"ResourceArns.member.1", "api"}
	for i := range 51 {
		tooMany = append(tooMany, fmt.Sprintf("Tags.member.%d.Key", i+1), fmt.Sprintf("k%d", i))
	}
	elbv2Refused(t, r, 400, "TooManyTags", "at most 50", "AddTags", tooMany...)
	if after := targetgroup.Fingerprint(t, r); after != before {
		t.Fatalf("refused calls changed the state:\nbefore %s\nafter  %s", before, after)
	}
}

func tooManyARNs(n int) []string {
	var kv []string
	for i := range n {
		kv = append(kv, fmt.Sprintf("ResourceArns.member.%d", i+1), "api")
	}
	return kv
}

// DescribeTargetGroups pages by PageSize in name order, each group once,
// NextMarker on every page but the last.
func TestELBv2Pagination(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	for i := range 5 {
		elbv2OK(t, r, nil, "CreateTargetGroup", "Name", fmt.Sprintf("page-%d", i), "TargetType", "ip", "Port", fmt.Sprint(9100+i))
	}
	var names []string
	marker, pages := "", 0
	for {
		kv := []string{"PageSize", "2"}
		if marker != "" {
			kv = append(kv, "Marker", marker)
		}
		var page xmlGroups
		elbv2OK(t, r, &page, "DescribeTargetGroups", kv...)
		pages++
		for _, g := range page.Groups {
			names = append(names, g.TargetGroupName)
		}
		if page.NextMarker == "" {
			break
		}
		if len(page.Groups) != 2 || pages > 10 {
			t.Fatalf("page %d: %+v", pages, page)
		}
		marker = page.NextMarker
	}
	if pages != 4 || fmt.Sprint(names) != "[api page-0 page-1 page-2 page-3 page-4 web]" {
		t.Fatalf("%d pages: %v", pages, names)
	}
	elbv2Refused(t, r, 400, "ValidationError", "PageSize: 0 is outside 1-400", "DescribeTargetGroups", "PageSize", "0")
	elbv2Refused(t, r, 400, "ValidationError", "PageSize: 401 is outside 1-400", "DescribeTargetGroups", "PageSize", "401")
	elbv2Refused(t, r, 400, "ValidationError", "is not a marker this API answered", "DescribeTargetGroups", "Marker", "!!")
	elbv2Refused(t, r, 400, "ValidationError", "is not a marker this API answered", "DescribeTargetGroups", "Marker", "zzz")
}

// FuzzELBv2 sends fuzzed form bodies to the ELBv2 handler. Nothing may
// panic or answer 500; every answer is XML; a refused call changes
// nothing.
func FuzzELBv2(f *testing.F) {
	for _, s := range []string{
		elbv2Form("CreateTargetGroup", "Name", "new", "TargetType", "ip", "Port", "9100", "HealthCheckIntervalSeconds", "10", "Tags.member.1.Key", "k"),
		elbv2Form("RegisterTargets", "TargetGroupArn", "api", "Targets.member.1.Id", "10.0.0.2", "Targets.member.2.Id", "8.8.8.8"),
		elbv2Form("DeregisterTargets", "TargetGroupArn", "web", "Targets.member.1.Id", "127.0.0.1", "Targets.member.1.Port", "1"),
		elbv2Form("ModifyTargetGroup", "TargetGroupArn", "api", "HealthCheckTimeoutSeconds", "40"),
		elbv2Form("ModifyTargetGroupAttributes", "TargetGroupArn", "api", "Attributes.member.1.Key", "slow_start.duration_seconds", "Attributes.member.1.Value", "30"),
		elbv2Form("DescribeTargetGroups", "PageSize", "1", "Marker", "ImFwaSI"),
		elbv2Form("DescribeTargetHealth", "TargetGroupArn", "api", "Targets", "", "Include.member.1", "All"),
		elbv2Form("AddTags", "ResourceArns.member.1", "api", "Tags.member.1.Key", "a", "Tags.member.1.Value", "b"),
		elbv2Form("DeleteTargetGroup", "TargetGroupArn", "api"),
		"Action=RemoveTags&Version=2015-12-01&ResourceArns.member.1=api&TagKeys.member.01=x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := targetgroup.AdminFixture(t)
		defer r.Destruct()
		before := targetgroup.Fingerprint(t, r)
		w := elbv2Post(t, r, body)
		if w.Code >= 500 {
			t.Fatalf("%q: %d %s", body, w.Code, w.Body.Bytes())
		}
		var v struct{ XMLName xml.Name }
		if err := xml.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatalf("%q: answer is not XML: %v: %s", body, err, w.Body.Bytes())
		}
		if w.Code == http.StatusOK {
			return
		}
		elbv2Err(t, w)
		if after := targetgroup.Fingerprint(t, r); after != before {
			t.Fatalf("%q was refused (%s) but changed the state:\nbefore %s\nafter  %s", body, w.Body.Bytes(), before, after)
		}
	})
}
