package integration_test

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeShowsTheTestedExamples keeps the README's Caddyfile and JSON
// examples identical to the files the other tests load and adapt.
func TestReadmeShowsTheTestedExamples(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"../examples/demo/Caddyfile", "../examples/demo/caddy.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(readme), strings.TrimSpace(string(b))) {
			t.Errorf("README.md does not show %s verbatim", f)
		}
	}
}
