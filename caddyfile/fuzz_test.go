package caddyfile

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// FuzzGlobalOption adapts Caddyfiles whose target_groups global option has
// a fuzzed body. No input may panic; when the Caddyfile adapts, every group
// in the JSON is one the app accepts (the parser validates groups as it
// reads them), and the JSON decodes strictly into the app.
//
//	go test ./caddyfile -run '^$' -fuzz '^FuzzGlobalOption$' -fuzztime 1m
func FuzzGlobalOption(f *testing.F) {
	// The golden files' global options, then a few hand-written bodies.
	files, _ := filepath.Glob(filepath.Join("testdata", "*.caddyfiletest"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		if body, ok := optionBody(string(data)); ok {
			f.Add(body)
		}
	}
	for _, s := range []string{
		"",
		"web",
		"web {\n}",
		"allowed_cidrs 10.0.0.0/8\nweb {\n target 10.1.2.3:80 zone a\n}",
		"web {\n health_check {\n  matcher grpc 0-99\n  port traffic-port\n }\n protocol_version GRPC\n}",
		"web {\n stickiness app_cookie SESSION 1h\n slow_start 30s\n}",
		"web {\n protocol TCP\n port 5432\n attribute proxy_protocol_v2.enabled true\n}",
		"web {\n type lambda\n target arn:aws:lambda:us-east-1:123456789012:function:f\n}",
		"web {\n tag team \"a b\"\n deregistration_delay 0s\n}",
		"web {\n target {$NOPE}\n}",
		"web {\n health_check off {\n }\n}",
		"zone a\nmax_groups 10\nmax_targets_per_group 5",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		cf := "{\n\ttarget_groups {\n" + body + "\n\t}\n}\n"
		out, _, err := adapt(cf)
		if err != nil {
			return
		}
		var cfg struct {
			Apps struct {
				TargetGroups json.RawMessage `json:"target_groups"`
			} `json:"apps"`
		}
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatalf("adapted config is not JSON: %v\n%s", err, out)
		}
		if cfg.Apps.TargetGroups == nil {
			return // the body closed the option early: not ours to judge
		}
		var app targetgroup.App
		dec := json.NewDecoder(bytes.NewReader(cfg.Apps.TargetGroups))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&app); err != nil {
			t.Fatalf("the target_groups app does not decode: %v\n%s", err, cfg.Apps.TargetGroups)
		}
		allowed, err := targetgroup.ParseCIDRs(app.AllowedCIDRs)
		if err != nil {
			t.Fatalf("allowed_cidrs %q adapted but do not parse: %v", app.AllowedCIDRs, err)
		}
		for name, g := range app.Groups {
			if err := targetgroup.ValidateName(name); err != nil {
				t.Fatalf("group name %q adapted but is invalid: %v\n%s", name, err, cf)
			}
			if _, err := targetgroup.NewSpec(g, allowed); err != nil {
				t.Fatalf("group %q adapted but is invalid: %v\n%s", name, err, cf)
			}
		}
	})
}

// optionBody returns what is inside the target_groups option of a golden
// file's Caddyfile.
func optionBody(file string) (string, bool) {
	caddyfile, _, _ := strings.Cut(file, separator)
	_, rest, ok := strings.Cut(caddyfile, "target_groups {")
	if !ok {
		return "", false
	}
	// The option ends at the first line that closes it: one tab and a brace.
	body, _, ok := strings.Cut(rest, "\n\t}\n")
	return body, ok
}
