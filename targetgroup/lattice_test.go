package targetgroup_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup/adminapi"
)

// Tests of the VPC Lattice dialect (/vpc-lattice/) against the fixture's
// registry: "web", declared in the config (port 8080, a config target
// 127.0.0.1:1 and an API one 127.0.0.1:2), and "api", created through the
// API (port 9000, client token tok-1, target 10.0.0.1).

var latticeHandler = new(adminapi.AdminAPI).Routes()[3].Handler

// latticeAnswer is one answer of the Lattice handler.
type latticeAnswer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func lattice(t *testing.T, r *targetgroup.Registry, method, path, body string) latticeAnswer {
	t.Helper()
	defer targetgroup.Use(r)()
	req := httptest.NewRequest(method, "/vpc-lattice"+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	if err := latticeHandler.ServeHTTP(w, req); err != nil {
		t.Fatal(err)
	}
	a := latticeAnswer{status: w.Code, header: w.Header(), raw: w.Body.String()}
	if err := json.Unmarshal(w.Body.Bytes(), &a.body); err != nil {
		t.Fatalf("%s %s: answer is not a JSON object: %q", method, path, w.Body.String())
	}
	if len(w.Header()["x-amzn-RequestId"]) != 1 {
		t.Fatalf("%s %s: no x-amzn-RequestId header: %v", method, path, w.Header())
	}
	return a
}

// must checks the status of an answer.
func (a latticeAnswer) must(t *testing.T, status int) latticeAnswer {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.raw)
	}
	return a
}

// refused checks an error answer: its status, its type in the header and
// the members the model requires of that type.
func (a latticeAnswer) refused(t *testing.T, status int, typ string) latticeAnswer {
	t.Helper()
	a.must(t, status)
	if got := a.header["X-Amzn-ErrorType"]; len(got) != 1 || got[0] != typ {
		t.Fatalf("X-Amzn-ErrorType %v, want %s: %s", got, typ, a.raw)
	}
	if m, _ := a.body["message"].(string); m == "" {
		t.Fatalf("no message: %s", a.raw)
	}
	switch typ {
	case "ValidationException":
		if a.body["reason"] == nil {
			t.Fatalf("no reason: %s", a.raw)
		}
	case "ResourceNotFoundException", "ConflictException":
		if a.body["resourceId"] == "" || a.body["resourceType"] != "TARGET_GROUP" {
			t.Fatalf("no resourceId/resourceType: %s", a.raw)
		}
	}
	return a
}

// fields lists the names of a ValidationException's fieldList.
func (a latticeAnswer) fields() []string {
	var out []string
	list, _ := a.body["fieldList"].([]any)
	for _, f := range list {
		m, _ := f.(map[string]any)
		name, _ := m["name"].(string)
		out = append(out, name)
	}
	return out
}

func (a latticeAnswer) str(key string) string { s, _ := a.body[key].(string); return s }

// seedCreate is CreateTargetGroup with every member of the seed's request.
const seedCreate = `{
	"name": "seed-group",
	"type": "IP",
	"config": {
		"port": 8443,
		"protocol": "HTTPS",
		"protocolVersion": "HTTP2",
		"ipAddressType": "IPV4",
		"vpcIdentifier": "vpc-0123456789abcdef0",
		"healthCheck": {
			"enabled": true,
			"protocol": "HTTPS",
			"protocolVersion": "HTTP1",
			"port": 8081,
			"path": "/health?deep=1",
			"healthCheckIntervalSeconds": 10,
			"healthCheckTimeoutSeconds": 3,
			"healthyThresholdCount": 3,
			"unhealthyThresholdCount": 4,
			"matcher": {"httpCode": "200-299"}
		}
	},
	"clientToken": "seed-token-1",
	"tags": {"env": "dev"}
}`

// The seed's full request is answered 201 with every member of its
// response, the config exactly as asked; GetTargetGroup adds the times.
func TestLatticeCreateTargetGroupSeed(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	a := lattice(t, r, "POST", "/targetgroups", seedCreate).must(t, http.StatusCreated)
	id := a.str("id")
	if !regexp.MustCompile(`^tg-[0-9a-f]{17}$`).MatchString(id) {
		t.Fatalf("id %q", id)
	}
	if want := "arn:aws:vpc-lattice:us-east-1:000000000000:targetgroup/" + id; a.str("arn") != want {
		t.Fatalf("arn %q, want %q", a.str("arn"), want)
	}
	if a.str("name") != "seed-group" || a.str("type") != "IP" || a.str("status") != "ACTIVE" {
		t.Fatalf("answer %s", a.raw)
	}
	var req map[string]any
	_ = json.Unmarshal([]byte(seedCreate), &req)
	if !reflect.DeepEqual(a.body["config"], req["config"]) {
		t.Fatalf("config answered\n%v\nwant\n%v", a.body["config"], req["config"])
	}
	for _, k := range []string{"createdAt", "lastUpdatedAt", "serviceArns"} {
		if _, ok := a.body[k]; ok {
			t.Errorf("CreateTargetGroup answers %s, which is GetTargetGroup's", k)
		}
	}

	got := lattice(t, r, "GET", "/targetgroups/"+id, "").must(t, http.StatusOK)
	if !reflect.DeepEqual(got.body["config"], req["config"]) || got.str("id") != id {
		t.Fatalf("GetTargetGroup %s", got.raw)
	}
	iso := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
	if !iso.MatchString(got.str("createdAt")) || !iso.MatchString(got.str("lastUpdatedAt")) {
		t.Fatalf("times %q %q", got.str("createdAt"), got.str("lastUpdatedAt"))
	}
	if s, ok := got.body["serviceArns"].([]any); !ok || len(s) != 0 {
		t.Fatalf("serviceArns %v", got.body["serviceArns"])
	}
	tags := lattice(t, r, "GET", "/tags/"+url.PathEscape(got.str("arn")), "").must(t, http.StatusOK)
	if !reflect.DeepEqual(tags.body["tags"], map[string]any{"env": "dev"}) {
		t.Fatalf("tags %s", tags.raw)
	}
	// The JSON API sees the same group, with the same id.
	d := r.Group("seed-group").Describe()
	if d.ID != id || d.Protocol != "HTTPS" || d.VPCID != "vpc-0123456789abcdef0" || d.HealthCheck.Port.Port != 8081 {
		t.Fatalf("JSON API's view: %+v", d)
	}
}

// Members left out take Lattice's defaults: port 80 (443 for HTTPS),
// HTTP1, IPV4, the health check's, which is off for HTTP2, GRPC and TCP
// groups; LAMBDA groups get event structure V1 and no health check, ALB
// groups none either.
func TestLatticeCreateDefaults(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	for _, c := range []struct{ body, config string }{
		{`{"name":"plain","type":"IP"}`, `{"port":80,"protocol":"HTTP","protocolVersion":"HTTP1","ipAddressType":"IPV4","healthCheck":{"enabled":true,"protocol":"HTTP","protocolVersion":"HTTP1","path":"/","healthCheckIntervalSeconds":30,"healthCheckTimeoutSeconds":5,"healthyThresholdCount":5,"unhealthyThresholdCount":2,"matcher":{"httpCode":"200"}}}`},
		{`{"name":"secure","type":"IP","config":{"protocol":"HTTPS","healthCheck":{"path":"/up"}}}`, `{"port":443,"protocol":"HTTPS","protocolVersion":"HTTP1","ipAddressType":"IPV4","healthCheck":{"enabled":true,"protocol":"HTTP","protocolVersion":"HTTP1","path":"/up","healthCheckIntervalSeconds":30,"healthCheckTimeoutSeconds":5,"healthyThresholdCount":5,"unhealthyThresholdCount":2,"matcher":{"httpCode":"200"}}}`},
		{`{"name":"grpc","type":"IP","config":{"protocolVersion":"GRPC"}}`, `{"port":80,"protocol":"HTTP","protocolVersion":"GRPC","ipAddressType":"IPV4","healthCheck":{"enabled":false,"protocol":"HTTP","protocolVersion":"HTTP1","path":"/","healthCheckIntervalSeconds":30,"healthCheckTimeoutSeconds":5,"healthyThresholdCount":5,"unhealthyThresholdCount":2,"matcher":{"httpCode":"200"}}}`},
		{`{"name":"h2-group","type":"IP","config":{"protocolVersion":"HTTP2"}}`, `{"port":80,"protocol":"HTTP","protocolVersion":"HTTP2","ipAddressType":"IPV4","healthCheck":{"enabled":false,"protocol":"HTTP","protocolVersion":"HTTP2","path":"/","healthCheckIntervalSeconds":30,"healthCheckTimeoutSeconds":5,"healthyThresholdCount":5,"unhealthyThresholdCount":2,"matcher":{"httpCode":"200"}}}`},
		{`{"name":"tcp-checked","type":"IP","config":{"port":5432,"protocol":"TCP","healthCheck":{"enabled":true}}}`, `{"port":5432,"protocol":"TCP","ipAddressType":"IPV4","healthCheck":{"enabled":true,"protocol":"HTTP","protocolVersion":"HTTP1","path":"/","healthCheckIntervalSeconds":30,"healthCheckTimeoutSeconds":5,"healthyThresholdCount":5,"unhealthyThresholdCount":2,"matcher":{"httpCode":"200"}}}`},
		{`{"name":"fn-a","type":"LAMBDA"}`, `{"lambdaEventStructureVersion":"V1"}`},
		{`{"name":"fn-two","type":"LAMBDA","config":{"lambdaEventStructureVersion":"V2"}}`, `{"lambdaEventStructureVersion":"V2"}`},
		{`{"name":"lb-a","type":"ALB","config":{"port":8080,"protocol":"HTTP","vpcIdentifier":"vpc-01234567"}}`, `{"port":8080,"protocol":"HTTP","protocolVersion":"HTTP1","ipAddressType":"IPV4","vpcIdentifier":"vpc-01234567"}`},
		{`{"name":"hosts","type":"INSTANCE","config":{"port":8080,"protocol":"TCP"}}`, `{"port":8080,"protocol":"TCP","ipAddressType":"IPV4","healthCheck":{"enabled":false,"protocol":"HTTP","protocolVersion":"HTTP1","path":"/","healthCheckIntervalSeconds":30,"healthCheckTimeoutSeconds":5,"healthyThresholdCount":5,"unhealthyThresholdCount":2,"matcher":{"httpCode":"200"}}}`},
	} {
		a := lattice(t, r, "POST", "/targetgroups", c.body).must(t, http.StatusCreated)
		var want any
		_ = json.Unmarshal([]byte(c.config), &want)
		if !reflect.DeepEqual(a.body["config"], want) {
			got, _ := json.Marshal(a.body["config"])
			t.Errorf("%s: config\n%s\nwant\n%s", c.body, got, c.config)
		}
	}
}

// Refusals name every wrong member by its Lattice name, with the allowed
// values, in fieldList; none changes anything.
func TestLatticeValidation(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	before := targetgroup.Fingerprint(t, r)
	for _, c := range []struct {
		body   string
		fields []string
		msg    string
	}{
		{`{"name":"x-one","type":"FOO","config":{"protocol":"UDP","protocolVersion":"HTTP3"}}`,
			[]string{"type", "config.protocol", "config.protocolVersion"}, `"UDP" must be one of HTTP, HTTPS, TCP`},
		{`{"type":"IP"}`, []string{"name"}, "required"},
		{`{"name":"tg-reserved","type":"IP"}`, []string{"name"}, `must not begin with "tg-"`},
		{`{"name":"Upper","type":"IP"}`, []string{"name"}, "a-z, 0-9 and hyphens"},
		// A wrong name is named beside the other wrong members.
		{`{"name":"Bad_Name","type":"BOGUS","clientToken":"has space"}`, []string{"name", "type", "clientToken"}, "a-z, 0-9 and hyphens"},
		{`{"name":"fn-a","type":"LAMBDA","config":{"port":80,"healthCheck":{"enabled":true},"vpcIdentifier":"vpc-01234567"}}`,
			[]string{"config.port", "config.vpcIdentifier", "config.healthCheck"}, "not supported for target groups of type LAMBDA"},
		{`{"name":"lb-a","type":"ALB","config":{"healthCheck":{"enabled":true}}}`, []string{"config.healthCheck"}, "not supported for target groups of type ALB"},
		{`{"name":"v-six","type":"INSTANCE","config":{"ipAddressType":"IPV6"}}`, []string{"config.ipAddressType"}, "supported only for target groups of type IP"},
		{`{"name":"ev-a","type":"IP","config":{"lambdaEventStructureVersion":"V1"}}`, []string{"config.lambdaEventStructureVersion"}, "LAMBDA"},
		{`{"name":"hc-a","type":"IP","config":{"port":70000,"vpcIdentifier":"vpc-1","healthCheck":{"protocol":"TCP","protocolVersion":"GRPC","healthCheckIntervalSeconds":3,"healthCheckTimeoutSeconds":121,"healthyThresholdCount":11,"unhealthyThresholdCount":1}}}`,
			[]string{"config.port", "config.vpcIdentifier", "config.healthCheck.protocol", "config.healthCheck.protocolVersion", "config.healthCheck.healthCheckIntervalSeconds", "config.healthCheck.healthCheckTimeoutSeconds", "config.healthCheck.healthyThresholdCount", "config.healthCheck.unhealthyThresholdCount"},
			"3 is outside 5-300 seconds"},
		// The domain's rules, its fields renamed.
		{`{"name":"slow","type":"IP","config":{"healthCheck":{"healthCheckIntervalSeconds":5,"healthCheckTimeoutSeconds":5}}}`,
			[]string{"config.healthCheck.healthCheckTimeoutSeconds"}, "shorter than the interval"},
		{`{"name":"codes","type":"IP","config":{"healthCheck":{"matcher":{"httpCode":"700"}}}}`, []string{"config.healthCheck.matcher.httpCode"}, "700"},
		{`{"name":"path","type":"IP","config":{"healthCheck":{"path":"no-slash"}}}`, []string{"config.healthCheck.path"}, `must begin with "/"`},
		{`{"name":"tags","type":"IP","tags":{"aws:x":"1"}}`, []string{"tags.aws:x"}, "aws:"},
		// The body: unknown members, wrong types, duplicate keys.
		{`{"name":"odd","type":"IP","colour":"blue"}`, []string{"colour"}, "unknown field"},
		{`{"name":"odd","type":"IP","config":{"port":"eighty"}}`, []string{"config.port"}, "cannot unmarshal"},
		{`{"name":"odd","type":"IP","name":"even"}`, []string{"name"}, "given twice"},
		{`not json`, []string{"body"}, "invalid character"},
	} {
		a := lattice(t, r, "POST", "/targetgroups", c.body).refused(t, http.StatusBadRequest, "ValidationException")
		if got := a.fields(); !reflect.DeepEqual(got, c.fields) {
			t.Errorf("%s: fieldList %v, want %v (%s)", c.body, got, c.fields, a.raw)
		}
		if !strings.Contains(a.str("message"), c.msg) {
			t.Errorf("%s: message %q does not say %q", c.body, a.str("message"), c.msg)
		}
	}
	if after := targetgroup.Fingerprint(t, r); after != before {
		t.Fatalf("refused creations changed the state:\nbefore %s\nafter  %s", before, after)
	}
}

// The same client token with the same parameters is the same group; with
// other parameters, or a taken name under another token, a conflict.
func TestLatticeCreateIdempotency(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	first := lattice(t, r, "POST", "/targetgroups", seedCreate).must(t, http.StatusCreated)
	again := lattice(t, r, "POST", "/targetgroups", seedCreate).must(t, http.StatusCreated)
	if again.str("id") != first.str("id") {
		t.Fatalf("retry created another group: %s, then %s", first.str("id"), again.str("id"))
	}
	before := targetgroup.Fingerprint(t, r)
	otherParams := strings.Replace(seedCreate, `"port": 8443`, `"port": 8444`, 1)
	a := lattice(t, r, "POST", "/targetgroups", otherParams).refused(t, http.StatusConflict, "ConflictException")
	if !strings.Contains(a.str("message"), "clientToken") {
		t.Errorf("token conflict: %s", a.raw)
	}
	otherToken := strings.Replace(seedCreate, "seed-token-1", "seed-token-2", 1)
	a = lattice(t, r, "POST", "/targetgroups", otherToken).refused(t, http.StatusConflict, "ConflictException")
	if a.str("resourceId") != first.str("id") || !strings.Contains(a.str("message"), "already exists") {
		t.Errorf("taken name: %s", a.raw)
	}
	noToken := strings.Replace(seedCreate, `"clientToken": "seed-token-1",`, "", 1)
	lattice(t, r, "POST", "/targetgroups", noToken).refused(t, http.StatusConflict, "ConflictException")
	// A group of the config, or of the JSON API, holds its name too.
	lattice(t, r, "POST", "/targetgroups", `{"name":"web","type":"IP","config":{"port":8080}}`).refused(t, http.StatusConflict, "ConflictException")
	if after := targetgroup.Fingerprint(t, r); after != before {
		t.Fatalf("refused creations changed the state:\nbefore %s\nafter  %s", before, after)
	}
	// Another token that created another group is no retry of this one.
	lattice(t, r, "POST", "/targetgroups", `{"name":"other","type":"IP","clientToken":"tok-other"}`).must(t, http.StatusCreated)
	lattice(t, r, "POST", "/targetgroups", `{"name":"other","type":"IP","clientToken":"seed-token-1"}`).refused(t, http.StatusConflict, "ConflictException")
}

// Identifiers: the id, the Lattice ARN percent-encoded as the SDKs send it,
// the ELBv2 ARN and the name name the same group; an unknown one is 404.
func TestLatticeIdentifiers(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	g := r.Group("api")
	for _, ref := range []string{g.ID(), strings.ReplaceAll(url.PathEscape(g.LatticeARN()), "/", "%2F"), url.PathEscape(g.ARN()), "api"} {
		if !strings.Contains(ref, "%2F") && strings.HasPrefix(ref, "arn") {
			t.Fatalf("%s is not escaped as the SDKs escape it", ref)
		}
		a := lattice(t, r, "GET", "/targetgroups/"+ref, "").must(t, http.StatusOK)
		if a.str("id") != g.ID() || a.str("arn") != g.LatticeARN() {
			t.Fatalf("%s: %s", ref, a.raw)
		}
		lattice(t, r, "POST", "/targetgroups/"+ref+"/listtargets", "{}").must(t, http.StatusOK)
	}
	missing := "tg-0123456789abcdef0"
	a := lattice(t, r, "GET", "/targetgroups/"+missing, "").refused(t, http.StatusNotFound, "ResourceNotFoundException")
	if a.str("resourceId") != missing {
		t.Fatalf("resourceId %s", a.raw)
	}
	arn := "arn:aws:vpc-lattice:us-east-1:000000000000:targetgroup/" + missing
	lattice(t, r, "POST", "/targetgroups/"+url.PathEscape(arn)+"/registertargets", `{"targets":[{"id":"10.0.0.9"}]}`).refused(t, http.StatusNotFound, "ResourceNotFoundException")
	lattice(t, r, "GET", "/tags/"+url.PathEscape(arn), "").refused(t, http.StatusNotFound, "ResourceNotFoundException")
}

// RegisterTargets and DeregisterTargets report each refused target in
// unsuccessful with HTTP 200, and make the others' change.
func TestLatticeTargetsPartialSuccess(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	a := lattice(t, r, "POST", "/targetgroups/api/registertargets",
		`{"targets":[{"id":"10.0.0.5","port":9001},{"id":"8.8.8.8"},{"id":"10.0.0.6"},{"id":"not-an-ip","port":80}]}`).must(t, http.StatusOK)
	succ, _ := json.Marshal(a.body["successful"])
	if string(succ) != `[{"id":"10.0.0.5","port":9001},{"id":"10.0.0.6","port":9000}]` {
		t.Fatalf("successful %s", succ)
	}
	fails, _ := a.body["unsuccessful"].([]any)
	if len(fails) != 2 {
		t.Fatalf("unsuccessful %s", a.raw)
	}
	for i, want := range []struct {
		id   string
		port float64
		msg  string
	}{{"8.8.8.8", 9000, "id: "}, {"not-an-ip", 80, "not an IP address"}} {
		f := fails[i].(map[string]any)
		if f["id"] != want.id || f["port"] != want.port || f["failureCode"] != "InvalidTarget" || !strings.Contains(f["failureMessage"].(string), want.msg) {
			t.Errorf("unsuccessful[%d] %v, want %s:%v InvalidTarget %q", i, f, want.id, want.port, want.msg)
		}
	}
	list := lattice(t, r, "POST", "/targetgroups/api/listtargets", "").must(t, http.StatusOK)
	items, _ := json.Marshal(list.body["items"])
	if string(items) != `[{"id":"10.0.0.1","port":9000,"reasonCode":"Elb.RegistrationInProgress","status":"INITIAL"},{"id":"10.0.0.5","port":9001,"reasonCode":"Elb.RegistrationInProgress","status":"INITIAL"},{"id":"10.0.0.6","port":9000,"reasonCode":"Elb.RegistrationInProgress","status":"INITIAL"}]` {
		t.Fatalf("ListTargets %s", items)
	}

	// A config target can't be deregistered through the API; the API
	// target beside it is.
	a = lattice(t, r, "POST", "/targetgroups/web/deregistertargets", `{"targets":[{"id":"127.0.0.1","port":1},{"id":"127.0.0.1","port":2}]}`).must(t, http.StatusOK)
	succ, _ = json.Marshal(a.body["successful"])
	fail, _ := json.Marshal(a.body["unsuccessful"])
	if string(succ) != `[{"id":"127.0.0.1","port":2}]` || !strings.Contains(string(fail), `"failureCode":"OperationNotPermitted"`) {
		t.Fatalf("deregister: %s", a.raw)
	}
	a = lattice(t, r, "POST", "/targetgroups/api/deregistertargets", `{"targets":[{"id":"10.0.0.5","port":9001}]}`).must(t, http.StatusOK)
	list = lattice(t, r, "POST", "/targetgroups/api/listtargets", `{"targets":[{"id":"10.0.0.5","port":9001},{"id":"10.0.0.77"}]}`).must(t, http.StatusOK)
	items, _ = json.Marshal(list.body["items"])
	if string(items) != `[{"id":"10.0.0.5","port":9001,"reasonCode":"Target.DeregistrationInProgress","status":"DRAINING"},{"id":"10.0.0.77","port":9000,"reasonCode":"Target.NotRegistered","status":"UNUSED"}]` {
		t.Fatalf("ListTargets with a filter %s", items)
	}

	// A lambda group holds one function, without a port.
	lattice(t, r, "POST", "/targetgroups", `{"name":"fn-a","type":"LAMBDA"}`).must(t, http.StatusCreated)
	a = lattice(t, r, "POST", "/targetgroups/fn-a/registertargets", `{"targets":[{"id":"my-function"},{"id":"other-function"},{"id":"third","port":80}]}`).must(t, http.StatusOK)
	succ, _ = json.Marshal(a.body["successful"])
	fail, _ = json.Marshal(a.body["unsuccessful"])
	if string(succ) != `[{"id":"my-function"}]` || !strings.Contains(string(fail), "single target") || !strings.Contains(string(fail), "lambda targets have no port") {
		t.Fatalf("lambda: %s", a.raw)
	}

	// The model's bounds refuse the whole call.
	before := targetgroup.Fingerprint(t, r)
	many := make([]string, 101)
	for i := range many {
		many[i] = fmt.Sprintf(`{"id":"10.1.0.%d"}`, i)
	}
	for body, field := range map[string]string{
		`{"targets":[]}`: "targets",
		`{"targets":[` + strings.Join(many, ",") + `]}`:             "targets",
		`{"targets":[{"id":""}]}`:                                   "targets[0].id",
		`{"targets":[{"id":"10.0.0.1","port":0}]}`:                  "targets[0].port",
		`{"targets":[{"id":"` + strings.Repeat("a", 201) + `"}]}`:   "targets[0].id",
		`{"targets":[{"id":"10.0.0.1","port":1},{"id":"10.0.0.2"}]`: "body",
	} {
		for _, op := range []string{"registertargets", "deregistertargets"} {
			a := lattice(t, r, "POST", "/targetgroups/api/"+op, body).refused(t, http.StatusBadRequest, "ValidationException")
			if f := a.fields(); len(f) != 1 || f[0] != field {
				t.Errorf("%s %.60s: fieldList %v, want %s", op, body, f, field)
			}
		}
	}
	if after := targetgroup.Fingerprint(t, r); after != before {
		t.Fatalf("refused calls changed the state:\nbefore %s\nafter  %s", before, after)
	}
}

// Past max_targets_per_group, the targets that don't fit are reported one
// by one; the others are registered.
func TestLatticeTargetQuota(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	n := 1 // the fixture's 10.0.0.1
	for batch := 0; n < 999; batch++ {
		var ts []string
		for i := 0; i < 100 && n < 999; i++ {
			ts = append(ts, fmt.Sprintf(`{"id":"10.2.%d.%d"}`, n/250, n%250))
			n++
		}
		lattice(t, r, "POST", "/targetgroups/api/registertargets", `{"targets":[`+strings.Join(ts, ",")+`]}`).must(t, http.StatusOK)
	}
	a := lattice(t, r, "POST", "/targetgroups/api/registertargets", `{"targets":[{"id":"10.3.0.1"},{"id":"10.3.0.2"}]}`).must(t, http.StatusOK)
	succ, _ := json.Marshal(a.body["successful"])
	fail, _ := json.Marshal(a.body["unsuccessful"])
	if string(succ) != `[{"id":"10.3.0.1","port":9000}]` || !strings.Contains(string(fail), `"failureCode":"TooManyTargets"`) || !strings.Contains(string(fail), "max_targets_per_group") {
		t.Fatalf("over the quota: %s", a.raw)
	}
}

// ListTargets and ListTargetGroups page with maxResults and nextToken,
// every item once; ListTargetGroups filters by type and VPC.
func TestLatticePagination(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	lattice(t, r, "POST", "/targetgroups/api/registertargets", `{"targets":[{"id":"10.0.0.2"},{"id":"10.0.0.3"},{"id":"10.0.0.4"},{"id":"10.0.0.5"}]}`).must(t, http.StatusOK)
	var ids []string
	pages := 0
	for tok := ""; ; pages++ {
		q := "?maxResults=2"
		if tok != "" {
			q += "&nextToken=" + url.QueryEscape(tok)
		}
		a := lattice(t, r, "POST", "/targetgroups/api/listtargets"+q, "{}").must(t, http.StatusOK)
		for _, it := range a.body["items"].([]any) {
			ids = append(ids, it.(map[string]any)["id"].(string))
		}
		if tok = a.str("nextToken"); tok == "" {
			break
		}
	}
	if want := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"}; !reflect.DeepEqual(ids, want) || pages != 2 {
		t.Fatalf("pages %d, ids %v", pages, ids)
	}

	lattice(t, r, "POST", "/targetgroups", `{"name":"fn-a","type":"LAMBDA"}`).must(t, http.StatusCreated)
	lattice(t, r, "POST", "/targetgroups", `{"name":"in-vpc","type":"IP","config":{"vpcIdentifier":"vpc-01234567"}}`).must(t, http.StatusCreated)
	var names []string
	for tok := ""; ; {
		q := "?maxResults=1"
		if tok != "" {
			q += "&nextToken=" + url.QueryEscape(tok)
		}
		a := lattice(t, r, "GET", "/targetgroups"+q, "").must(t, http.StatusOK)
		for _, it := range a.body["items"].([]any) {
			m := it.(map[string]any)
			names = append(names, m["name"].(string))
			for _, k := range []string{"id", "arn", "type", "createdAt", "lastUpdatedAt", "status", "serviceArns"} {
				if m[k] == nil {
					t.Errorf("item %s has no %s", m["name"], k)
				}
			}
		}
		if tok = a.str("nextToken"); tok == "" {
			break
		}
	}
	if want := []string{"api", "fn-a", "in-vpc", "web"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("ListTargetGroups %v, want %v", names, want)
	}
	a := lattice(t, r, "GET", "/targetgroups?targetGroupType=LAMBDA", "").must(t, http.StatusOK)
	if items := a.body["items"].([]any); len(items) != 1 || items[0].(map[string]any)["lambdaEventStructureVersion"] != "V1" {
		t.Fatalf("type filter: %s", a.raw)
	}
	a = lattice(t, r, "GET", "/targetgroups?vpcIdentifier=vpc-01234567", "").must(t, http.StatusOK)
	if items := a.body["items"].([]any); len(items) != 1 || items[0].(map[string]any)["name"] != "in-vpc" {
		t.Fatalf("VPC filter: %s", a.raw)
	}
	for _, q := range []string{"?maxResults=0", "?maxResults=101", "?maxResults=x", "?nextToken=%25%25", "?nextToken=zzz", "?targetGroupType=ip", "?vpcIdentifier=vpc-1"} {
		lattice(t, r, "GET", "/targetgroups"+q, "").refused(t, http.StatusBadRequest, "ValidationException")
	}
	lattice(t, r, "POST", "/targetgroups/api/listtargets?nextToken=bm9wZQ", "{}").refused(t, http.StatusBadRequest, "ValidationException")
}

// UpdateTargetGroup changes the named health check members only; a
// config group's settings are the config's.
func TestLatticeUpdateTargetGroup(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	before := lattice(t, r, "GET", "/targetgroups/api", "").must(t, http.StatusOK)
	a := lattice(t, r, "PATCH", "/targetgroups/api", `{"healthCheck":{"healthCheckIntervalSeconds":10,"matcher":{"httpCode":"200-204"}}}`).must(t, http.StatusOK)
	hcBefore := before.body["config"].(map[string]any)["healthCheck"].(map[string]any)
	hcAfter := a.body["config"].(map[string]any)["healthCheck"].(map[string]any)
	for k, v := range hcBefore {
		switch k {
		case "healthCheckIntervalSeconds":
			if hcAfter[k] != 10.0 {
				t.Errorf("interval %v", hcAfter[k])
			}
		case "matcher":
			if !reflect.DeepEqual(hcAfter[k], map[string]any{"httpCode": "200-204"}) {
				t.Errorf("matcher %v", hcAfter[k])
			}
		default:
			if !reflect.DeepEqual(hcAfter[k], v) {
				t.Errorf("%s changed from %v to %v", k, v, hcAfter[k])
			}
		}
	}
	if s := r.Group("api").Spec().HealthCheck; s.Interval.Seconds() != 10 {
		t.Fatalf("the domain's interval is %s", s.Interval)
	}

	fp := targetgroup.Fingerprint(t, r)
	lattice(t, r, "PATCH", "/targetgroups/web", `{"healthCheck":{"healthyThresholdCount":3}}`).refused(t, http.StatusConflict, "ConflictException")
	for body, field := range map[string]string{
		`{"healthCheck":{"healthCheckTimeoutSeconds":10}}`: "healthCheck.healthCheckTimeoutSeconds",
		`{"healthCheck":{"protocol":"TCP"}}`:               "healthCheck.protocol",
		`{}`:                                               "healthCheck",
		`{"healthCheck":{"path":"/a"},"port":80}`:          "port",
	} {
		a := lattice(t, r, "PATCH", "/targetgroups/api", body).refused(t, http.StatusBadRequest, "ValidationException")
		if f := a.fields(); len(f) != 1 || f[0] != field {
			t.Errorf("%s: fieldList %v, want %s (%s)", body, f, field, a.raw)
		}
	}
	lattice(t, r, "POST", "/targetgroups", `{"name":"fn-a","type":"LAMBDA"}`).must(t, http.StatusCreated)
	fp = targetgroup.Fingerprint(t, r)
	lattice(t, r, "PATCH", "/targetgroups/fn-a", `{"healthCheck":{"enabled":true}}`).refused(t, http.StatusBadRequest, "ValidationException")
	if after := targetgroup.Fingerprint(t, r); after != fp {
		t.Fatalf("refused updates changed the state")
	}
}

// DeleteTargetGroup is idempotent by id; tags are added, listed and
// removed by ARN.
func TestLatticeDeleteAndTags(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	g := r.Group("api")
	arn := url.PathEscape(g.LatticeARN())
	lattice(t, r, "POST", "/tags/"+arn, `{"tags":{"team":"web","tier":"1"}}`).must(t, http.StatusOK)
	lattice(t, r, "DELETE", "/tags/"+arn+"?tagKeys=tier&tagKeys=absent", "").must(t, http.StatusOK)
	a := lattice(t, r, "GET", "/tags/"+arn, "").must(t, http.StatusOK)
	if !reflect.DeepEqual(a.body["tags"], map[string]any{"team": "web"}) {
		t.Fatalf("tags %s", a.raw)
	}
	fp := targetgroup.Fingerprint(t, r)
	lattice(t, r, "DELETE", "/tags/"+arn, "").refused(t, http.StatusBadRequest, "ValidationException")
	lattice(t, r, "POST", "/tags/"+arn, `{"tags":{"aws:owner":"x"}}`).refused(t, http.StatusBadRequest, "ValidationException")
	lattice(t, r, "POST", "/tags/"+arn, `{}`).refused(t, http.StatusBadRequest, "ValidationException")
	// TagResource and UntagResource have no ConflictException in the
	// model (the Go SDK would answer it untyped): a config group's tags
	// are refused as a ValidationException.
	for _, c := range []struct{ method, path, body string }{{"POST", "/tags/web", `{"tags":{"a":"b"}}`}, {"DELETE", "/tags/web?tagKeys=a", ""}} {
		a := lattice(t, r, c.method, c.path, c.body).refused(t, http.StatusBadRequest, "ValidationException")
		if a.str("reason") != "other" || !strings.Contains(a.str("message"), "declared in the config") {
			t.Errorf("%s %s: %s", c.method, c.path, a.raw)
		}
	}
	lattice(t, r, "DELETE", "/targetgroups/web", "").refused(t, http.StatusConflict, "ConflictException")
	lattice(t, r, "DELETE", "/targetgroups/nosuch", "").refused(t, http.StatusNotFound, "ResourceNotFoundException")
	if after := targetgroup.Fingerprint(t, r); after != fp {
		t.Fatalf("refused calls changed the state")
	}

	for i := 0; i < 2; i++ {
		a := lattice(t, r, "DELETE", "/targetgroups/"+g.ID(), "").must(t, http.StatusOK)
		if a.str("id") != g.ID() || a.str("arn") != g.LatticeARN() || a.str("status") != "DELETE_IN_PROGRESS" {
			t.Fatalf("delete #%d: %s", i+1, a.raw)
		}
	}
	if r.Group("api") != nil {
		t.Fatal("the group is still there")
	}
	lattice(t, r, "GET", "/targetgroups/"+g.ID(), "").refused(t, http.StatusNotFound, "ResourceNotFoundException")
}

// Paths and methods that are no operation, and a Caddy without the app,
// are answered with typed errors too.
func TestLatticeRoutes(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	for _, c := range []struct{ method, path, msg string }{
		{"PUT", "/targetgroups", "this path takes POST (CreateTargetGroup), GET (ListTargetGroups)"},
		{"GET", "/targetgroups/api/registertargets", "POST (RegisterTargets)"},
		{"GET", "/services", "no VPC Lattice target group operation"},
		{"GET", "/targetgroups/api/bogus", "no VPC Lattice target group operation"},
	} {
		a := lattice(t, r, c.method, c.path, "").refused(t, http.StatusBadRequest, "ValidationException")
		if !strings.Contains(a.str("message"), c.msg) {
			t.Errorf("%s %s: %s", c.method, c.path, a.raw)
		}
	}
	a := lattice(t, nil, "GET", "/targetgroups", "").refused(t, http.StatusServiceUnavailable, "InternalServerException")
	if a.header.Get("Retry-After") == "" || !strings.Contains(a.str("message"), "target_groups app is not running") {
		t.Fatalf("no app: %v %s", a.header, a.raw)
	}
	big := `{"name":"big","type":"IP","tags":{"a":"` + strings.Repeat("b", maxBody) + `"}}`
	req := httptest.NewRequest("POST", "/vpc-lattice/targetgroups", bytes.NewReader([]byte(big)))
	w := httptest.NewRecorder()
	defer targetgroup.Use(r)()
	if err := latticeHandler.ServeHTTP(w, req); err != nil || w.Code != http.StatusRequestEntityTooLarge || w.Header()["X-Amzn-ErrorType"][0] != "ValidationException" {
		t.Fatalf("a body over 1 MiB: %d %v %s", w.Code, w.Header(), w.Body.Bytes())
	}
}
