package targetgroup_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup/adminapi"
)

// Tests of the admin API against registries built with the package's
// internals (export_test.go): a rejected call must change nothing of them.

// maxBody is the contract's bound on request bodies, 1 MiB.
const maxBody = 1 << 20

// adminHandler is the admin API's handler, as Caddy's admin server calls it.
var adminHandler = new(adminapi.AdminAPI).Routes()[0].Handler

// serveAdmin sends one request to the admin API of r.
func serveAdmin(tb testing.TB, r *targetgroup.Registry, method, path string, body []byte) *httptest.ResponseRecorder {
	tb.Helper()
	defer targetgroup.Use(r)()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	if err := adminHandler.ServeHTTP(w, req); err != nil {
		tb.Fatal(err)
	}
	return w
}

// adminCall sends one request to the admin API of r and reads the error
// body of its answer, if any.
func adminCall(t *testing.T, r *targetgroup.Registry, method, path, body string) (int, apiErrorBody) {
	t.Helper()
	w := serveAdmin(t, r, method, path, []byte(body))
	var e apiErrorBody
	_ = json.Unmarshal(w.Body.Bytes(), &e)
	return w.Code, e
}

type apiErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// A key given twice in one object, at any depth, is refused naming it;
// bodies over 1 MiB are 413, trailing data included.
func TestAdminBodiesAreStrict(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	before := targetgroup.Fingerprint(t, r)
	for _, c := range []struct{ method, path, body, key string }{
		{"POST", "/target-groups/", `{"name":"dup-a","name":"dup-b","port":80}`, `name`},
		{"POST", "/target-groups/web/targets", `{"targets":[{"id":"127.0.0.1","port":7},{"id":"127.0.0.1","port":8,"port":9}]}`, `targets[1].port`},
		{"POST", "/target-groups/web/targets", `{"targets":[{"id":"127.0.0.1","port":7}],"targets":[]}`, `targets`},
		{"PATCH", "/target-groups/api", `{"health_check":{"path":"/a","matcher":{"http_code":"200","http_code":"500"}}}`, `health_check.matcher.http_code`},
		{"PATCH", "/target-groups/api/attributes", `{"attributes":{"deregistration_delay.timeout_seconds":"5","deregistration_delay.timeout_seconds":"6"}}`, `attributes.deregistration_delay.timeout_seconds`},
	} {
		code, e := adminCall(t, r, c.method, c.path, c.body)
		if code != http.StatusBadRequest || e.Error.Code != adminapi.CodeValidation || !strings.HasPrefix(e.Error.Message, c.key+": ") {
			t.Fatalf("%s %s %s: %d %+v, want 400 ValidationException naming %s", c.method, c.path, c.body, code, e, c.key)
		}
	}
	if after := targetgroup.Fingerprint(t, r); after != before {
		t.Fatalf("refused bodies changed the state:\nbefore %s\nafter  %s", before, after)
	}
	// The same key in two objects is no duplicate.
	if code, e := adminCall(t, r, "POST", "/target-groups/web/targets", `{"targets":[{"id":"127.0.0.1","port":7},{"id":"127.0.0.1","port":8}]}`); code != http.StatusOK {
		t.Fatalf("two targets: %d %+v", code, e)
	}
	small := `{"targets":[{"id":"127.0.0.1","port":9}]}`
	for what, body := range map[string]string{
		"a body over 1 MiB":          `{"targets":[{"id":"127.0.0.1","port":9,"availability_zone":"` + strings.Repeat("a", maxBody) + `"}]}`,
		"trailing spaces past 1 MiB": small + strings.Repeat(" ", maxBody),
		"trailing data past 1 MiB":   small + strings.Repeat("{}", maxBody/2),
	} {
		if code, e := adminCall(t, r, "POST", "/target-groups/web/targets", body); code != http.StatusRequestEntityTooLarge || e.Error.Code != adminapi.CodePayloadTooLarge {
			t.Fatalf("%s: %d %+v, want 413 PayloadTooLarge", what, code, e)
		}
	}
	if code, e := adminCall(t, r, "POST", "/target-groups/web/targets", small+` {}`); code != http.StatusBadRequest || !strings.Contains(e.Error.Message, "after the JSON object") {
		t.Fatalf("trailing data: %d %+v", code, e)
	}
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
		r := targetgroup.AdminFixture(t)
		defer r.Destruct()
		defer targetgroup.Use(r)()

		call := adminOps[int(op)%len(adminOps)]
		before := targetgroup.Fingerprint(t, r)
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
		if err := adminHandler.ServeHTTP(w, req); err != nil {
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
		if after := targetgroup.Fingerprint(t, r); after != before {
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

// The route table's answers for paths and methods it does not take: a path
// naming no group is 404 whatever follows, a known path with another method
// is 405 naming the methods it takes (HEAD included: it is no GET), and an
// unknown path below a group is 404.
func TestAdminRoutes(t *testing.T) {
	r := targetgroup.AdminFixture(t)
	defer r.Destruct()
	for _, c := range []struct {
		method, path string
		status       int
		code, msg    string
	}{
		{"PUT", "/target-groups/", 405, adminapi.CodeMethodNotAllowed, "PUT /target-groups/: allowed methods are GET, POST"},
		{"HEAD", "/target-groups/web", 405, adminapi.CodeMethodNotAllowed, "HEAD /target-groups/web: allowed methods are GET, PATCH, DELETE"},
		{"HEAD", "/target-groups/web/targets", 405, adminapi.CodeMethodNotAllowed, "HEAD /target-groups/web/targets: allowed methods are GET, POST"},
		{"GET", "/target-groups/web/targets/deregister", 405, adminapi.CodeMethodNotAllowed, "GET /target-groups/web/targets/deregister: allowed methods are POST"},
		{"PUT", "/target-groups/web/attributes", 405, adminapi.CodeMethodNotAllowed, "PUT /target-groups/web/attributes: allowed methods are GET, PATCH"},
		{"DELETE", "/target-groups/web/health", 405, adminapi.CodeMethodNotAllowed, "DELETE /target-groups/web/health: allowed methods are GET"},
		{"PUT", "/target-groups/nosuch", 404, adminapi.CodeNotFound, `target group "nosuch" not found`},
		{"GET", "/target-groups/nosuch/bogus", 404, adminapi.CodeNotFound, `target group "nosuch" not found`},
		{"GET", "/target-groups/web/bogus", 404, adminapi.CodeNotFound, "no such resource: /target-groups/web/bogus"},
		{"GET", "/target-groups/web//targets", 404, adminapi.CodeNotFound, "no such resource: /target-groups/web//targets"},
		{"DELETE", "/target-groups/web", 409, adminapi.CodeNotPermitted, `target group "web" is declared in the config: remove it from the config and reload`},
	} {
		code, e := adminCall(t, r, c.method, c.path, "")
		if code != c.status || e.Error.Code != c.code || e.Error.Message != c.msg {
			t.Errorf("%s %s: %d %+v, want %d %s %q", c.method, c.path, code, e.Error, c.status, c.code, c.msg)
		}
	}
	// A group is named by its name, id or either ARN: percent-encoded, as
	// clients send an ARN, or as it is, its slashes in the path.
	g, err := r.Lookup("web")
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{g.ID(), g.ARN(), g.LatticeARN()} {
		for _, p := range []string{url.PathEscape(ref), ref} {
			for _, sub := range []string{"", "/targets", "/attributes"} {
				w := serveAdmin(t, r, "GET", "/target-groups/"+p+sub, nil)
				var d struct {
					Name    string `json:"name"`
					Targets []any  `json:"targets"`
				}
				if err := json.Unmarshal(w.Body.Bytes(), &d); w.Code != http.StatusOK || err != nil || (sub == "" && d.Name != "web") || (sub == "/targets" && len(d.Targets) != 2) {
					t.Errorf("GET /target-groups/%s%s: %d %s", p, sub, w.Code, w.Body.Bytes())
				}
			}
		}
	}
	for _, p := range []string{"arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/web/0000000000000000/targets", "arn:aws:vpc-lattice:us-east-1:000000000000:targetgroup"} {
		if code, e := adminCall(t, r, "GET", "/target-groups/"+p, ""); code/100 != 4 || e.Error.Message == "" {
			t.Errorf("GET /target-groups/%s: %d %+v, want a 4xx naming it", p, code, e.Error)
		}
	}
	// A trailing slash names the same resource.
	if w := serveAdmin(t, r, "GET", "/target-groups/web/targets/", nil); w.Code != http.StatusOK {
		t.Errorf("GET with a trailing slash: %d %s", w.Code, w.Body.Bytes())
	}
	// A group below its DNS failover threshold answers its health with 503.
	w := serveAdmin(t, r, "GET", "/target-groups/web/health", nil)
	var h targetgroup.GroupHealth
	if err := json.Unmarshal(w.Body.Bytes(), &h); err != nil || w.Code != http.StatusServiceUnavailable || !h.DNSFailover || h.Total != 2 {
		t.Errorf("health of a group without healthy targets: %d %s", w.Code, w.Body.Bytes())
	}
}
