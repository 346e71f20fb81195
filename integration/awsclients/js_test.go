package awsclients

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestLatticeJS runs js/lattice.mjs, the AWS SDK for JavaScript's VPC
// Lattice client driving the flow of TestLatticeGoSDK, against a Caddy,
// where Node.js and the SDK (npm ci in js/) are present.
func TestLatticeJS(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH: install Node.js 20 or later, and run npm ci in integration/awsclients/js, to run the JavaScript SDK's test")
	}
	dir, _ := filepath.Abs("js")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@aws-sdk", "client-vpc-lattice")); err != nil {
		t.Skip("the JavaScript SDK is not installed: run npm ci in integration/awsclients/js to run this test")
	}
	const group = "web-lattice-js"
	c := startCaddy(t, []string{group}, nil)
	one, two := newBackend(t, "one"), newBackend(t, "two")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "lattice.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"ADMIN="+c.admin, "SITE="+c.site, "GROUP="+group,
		fmt.Sprintf("BACKEND_ONE=%d", one.port), fmt.Sprintf("BACKEND_TWO=%d", two.port),
		// No credentials or region of the machine's may leak in.
		"AWS_PROFILE=", "AWS_CONFIG_FILE="+filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(t.TempDir(), "none"),
	)
	out, err := cmd.CombinedOutput()
	t.Logf("node lattice.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("node lattice.mjs: %v", err)
	}
}
