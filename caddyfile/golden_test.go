package caddyfile

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	// Only what go.mod already provides: modules/standard pulls in
	// templates and its dependencies, which go.mod does not list.
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	_ "github.com/caddy-targetgroup/caddy-targetgroup/integration"
)

var update = flag.Bool("update", false, "rewrite the expected JSON of testdata/*.caddyfiletest")

const separator = "\n----------\n"

// TestGolden adapts each testdata/*.caddyfiletest Caddyfile and compares
// the result with the JSON after the separator line.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddyfiletest"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			body, want, ok := strings.Cut(string(data), separator)
			if !ok {
				t.Fatalf("no %q line", strings.TrimSpace(separator))
			}
			got, warnings, err := adapt(body + "\n")
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s", w)
			}
			gotNorm := normalize(t, got)
			if *update {
				out := body + separator + string(gotNorm) + "\n"
				if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if wantNorm := normalize(t, []byte(want)); !bytes.Equal(gotNorm, wantNorm) {
				t.Errorf("adapted JSON differs\n got: %s\nwant: %s", gotNorm, wantNorm)
			}
		})
	}
}

// adapt runs the caddyfile adapter as `caddy adapt` does for a file named
// Caddyfile.
func adapt(body string) ([]byte, []caddyconfig.Warning, error) {
	return caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), map[string]any{"filename": "Caddyfile"})
}

// normalize re-encodes JSON so that key order and spacing don't matter.
func normalize(t *testing.T, b []byte) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, b)
	}
	out, err := json.MarshalIndent(v, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDemoExample keeps the README's demo Caddyfile and its JSON twin in
// step with this parser.
func TestDemoExample(t *testing.T) {
	// The Caddyfile takes its ports from the environment.
	for _, v := range []string{"DEMO_ADMIN_PORT", "DEMO_HTTP_PORT"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	body, err := os.ReadFile(filepath.Join("..", "examples", "demo", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join("..", "examples", "demo", "caddy.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, warnings, err := adapt(string(body))
	if err != nil {
		t.Fatalf("adapting: %v", err)
	}
	for _, w := range warnings {
		t.Errorf("warning: %s", w)
	}
	if g, w := normalize(t, got), normalize(t, want); !bytes.Equal(g, w) {
		t.Errorf("examples/demo/Caddyfile adapts to\n%s\nbut examples/demo/caddy.json is\n%s", g, w)
	}
}
