package caddyfile

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestReadmeCaddyfiles adapts every complete Caddyfile the README shows (the
// syntax summary, with its <placeholders>, is not one) and provisions the
// result, so that no example in the README is wrong.
func TestReadmeCaddyfiles(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(readme), "```caddyfile\n")[1:]
	tested := 0
	for i, b := range blocks {
		body, _, _ := strings.Cut(b, "```")
		if strings.Contains(body, "<") {
			continue
		}
		tested++
		raw, warnings, err := adapt(body)
		if err != nil {
			t.Errorf("README Caddyfile %d does not adapt: %v\n%s", i, err, body)
			continue
		}
		for _, w := range warnings {
			t.Errorf("README Caddyfile %d: warning %s", i, w)
		}
		// Validate provisions every module without starting anything.
		if err := caddy.Validate(mustConfig(t, raw)); err != nil {
			t.Errorf("README Caddyfile %d does not validate: %v\n%s", i, err, body)
		}
	}
	if tested < 3 {
		t.Fatalf("only %d complete Caddyfiles found in the README", tested)
	}
}

func mustConfig(t *testing.T, raw []byte) *caddy.Config {
	t.Helper()
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return &cfg
}
