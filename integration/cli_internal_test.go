package integration

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestCLIShorthand reads list flags' values as the AWS CLI does: shorthand
// syntax, JSON, file://.
func TestCLIShorthand(t *testing.T) {
	file := filepath.Join(t.TempDir(), "targets.json")
	if err := os.WriteFile(file, []byte(`[{"Id":"10.0.0.3","Port":"8080"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in   []string
		want []map[string]any
	}{
		{[]string{"Id=127.0.0.1,Port=9001,AvailabilityZone=a"}, []map[string]any{{"id": "127.0.0.1", "port": 9001, "availability_zone": "a"}}},
		{[]string{"Id=10.0.0.1", "Id=10.0.0.2,Port=81,Weight=5"}, []map[string]any{{"id": "10.0.0.1"}, {"id": "10.0.0.2", "port": 81, "weight": 5}}},
		{[]string{"Id=::1, Port=9001"}, []map[string]any{{"id": "::1", "port": 9001}}},
		{[]string{"id=h.example,port=80,availability_zone=z"}, []map[string]any{{"id": "h.example", "port": 80, "availability_zone": "z"}}},
		{[]string{`Id="a,b",AvailabilityZone='it\'s'`}, []map[string]any{{"id": "a,b", "availability_zone": "it's"}}},
		{[]string{`[{"Id":"127.0.0.1","Port":9001},{"Id":"127.0.0.2","AvailabilityZone":"b"}]`}, []map[string]any{{"id": "127.0.0.1", "port": 9001}, {"id": "127.0.0.2", "availability_zone": "b"}}},
		{[]string{`{"id":"127.0.0.1","port":9001}`}, []map[string]any{{"id": "127.0.0.1", "port": 9001}}},
		{[]string{"file://" + file}, []map[string]any{{"id": "10.0.0.3", "port": 8080}}},
	} {
		got, err := parseStructs("targets", tc.in, targetMembers)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: got %v, want %v", tc.in, got, tc.want)
		}
	}

	// A comma-separated piece without "=" continues the value before it.
	got, err := parseStructs("matcher", []string{"HttpCode=200,202"}, matcherMembers)
	if err != nil || !reflect.DeepEqual(got, []map[string]any{{"http_code": "200,202"}}) {
		t.Errorf("HttpCode=200,202: %v, %v", got, err)
	}
	got, err = parseStructs("attributes", []string{"Key=stickiness.enabled,Value=true", `[{"Key":"slow_start.duration_seconds","Value":"30"}]`}, keyValueMembers)
	if err != nil || !reflect.DeepEqual(got, []map[string]any{{"key": "stickiness.enabled", "value": "true"}, {"key": "slow_start.duration_seconds", "value": "30"}}) {
		t.Errorf("attributes: %v, %v", got, err)
	}

	for in, want := range map[string]string{
		"Port=80":                  "target 1 has no Id",
		"Id=a,Port=x":              `invalid value for Port: "x" is not an integer`,
		"Id=a,Zone=b":              `unknown parameter "Zone", must be one of: Id, Port, AvailabilityZone, Weight`,
		"Id=a,Id=b":                "Id is given twice",
		"127.0.0.1:80":             `expected: '=' after "127.0.0.1:80"`,
		`Id="a`:                    "no closing \"",
		`Id="a"b`:                  "expected: ','",
		`[{"Id":"a"`:               "invalid JSON",
		`[{"Id":"a","Port":true}]`: "true is not a string or a number",
		"=a":                       "expected a key",
		"file:///nonexistent/x":    "no such file",
	} {
		_, err := parseStructs("targets", []string{in}, targetMembers)
		var ce *cliError
		if !errors.As(err, &ce) || ce.code != codeParamValidation || !strings.Contains(ce.message, "Error parsing parameter '--targets': ") || !strings.Contains(ce.message, want) {
			t.Errorf("%q: got %v, want a ParamValidation error with %q", in, err, want)
		}
	}
}

// TestCLISpreadListArgs gives a list flag every value after it.
func TestCLISpreadListArgs(t *testing.T) {
	got := spreadListArgs([]string{"--target-group", "web", "--targets", "Id=a", "Id=b", "--output", "json", "--targets=Id=c", "Id=d", "--names", "--address", "x", "--", "--targets"}, cliListFlags)
	want := []string{"--target-group", "web", "--targets=Id=a", "--targets=Id=b", "--output", "json", "--targets=Id=c", "--targets=Id=d", "--names", "--address", "x", "--", "--targets"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// TestCLITable draws tables as the AWS CLI's table output.
func TestCLITable(t *testing.T) {
	var b strings.Builder
	table{title: "DescribeTargetHealth", header: []string{"Id", "Port", "State"}, rows: [][]string{{"127.0.0.1", "9001", "healthy"}, {"::1", "80", "draining"}}}.write(&b)
	want := `----------------------------------
|      DescribeTargetHealth      |
+------------+-------+-----------+
|     Id     | Port  |   State   |
+------------+-------+-----------+
|  127.0.0.1 |  9001 |  healthy  |
|  ::1       |  80   |  draining |
+------------+-------+-----------+
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	table{title: "CreateTargetGroup", rows: [][]string{{"TargetGroupName", "api"}, {"Port", "80"}}}.write(&b)
	want = `---------------------------
|    CreateTargetGroup    |
+------------------+------+
|  TargetGroupName |  api |
|  Port            |  80  |
+------------------+------+
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestCLIAdminError reads the errors of caddycmd.AdminAPIRequest.
func TestCLIAdminError(t *testing.T) {
	for in, want := range map[string]cliError{
		"caddy responded with error: HTTP 404: {\"error\":{\"code\":\"ResourceNotFoundException\",\"message\":\"target group \\\"x\\\" not found\"}}\n": {"ResourceNotFoundException", `target group "x" not found`},
		"caddy responded with error: HTTP 403: {\"error\":\"client is not allowed to access from origin ''\"}\n":                                        {"Forbidden", "client is not allowed to access from origin ''"},
		"caddy responded with error: HTTP 502: bad gateway":                                                                                             {"BadGateway", "bad gateway"},
		`performing request: Get "http://127.0.0.1:1/target-groups/": dial tcp 127.0.0.1:1: connect: connection refused`:                                {codeEndpoint, `Could not connect to the endpoint URL: "http://127.0.0.1:1/target-groups/": dial tcp 127.0.0.1:1: connect: connection refused`},
	} {
		err := adminError("127.0.0.1:1", "/target-groups/", errors.New(in))
		var ce *cliError
		if !errors.As(err, &ce) || *ce != want {
			t.Errorf("%q: got %#v, want %#v", in, err, want)
		}
	}
}
