package integration_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests that drive the built binary each run their own Caddy process,
// so they run in parallel with each other (t.Parallel), once the tests of
// the in-process Caddy, which is one per process, are done.

// build is the one xcaddy build of a test run, however many tests ask.
var build struct {
	once sync.Once
	bin  string
	err  error
}

// caddyBinary builds Caddy with the plugin through xcaddy, exactly as the
// README does, unless CADDY_BINARY names one already built.
func caddyBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds Caddy with xcaddy; skipped with -short")
	}
	if bin := os.Getenv("CADDY_BINARY"); bin != "" {
		return bin
	}
	build.once.Do(func() {
		root, _ := filepath.Abs("..")
		cmd := exec.Command(filepath.Join(root, "scripts", "build-caddy.sh"))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			build.err = fmt.Errorf("building caddy with xcaddy: %v\n%s", err, out.String())
			return
		}
		build.bin = filepath.Join(root, "bin", "caddy")
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

// TestBuiltBinary drives a Caddy built with xcaddy as a user would: it lists
// the modules, adapts the README's demo Caddyfile, runs it, and registers
// and deregisters targets with plain HTTP calls to the admin API.
func TestBuiltBinary(t *testing.T) {
	t.Parallel()
	bin := caddyBinary(t)

	out, err := exec.Command(bin, "list-modules").CombinedOutput()
	if err != nil {
		t.Fatalf("list-modules: %v\n%s", err, out)
	}
	for _, id := range []string{"target_groups", "admin.api.target_groups", "http.reverse_proxy.upstreams.target_group", "http.reverse_proxy.selection_policies.target_group", "http.handlers.target_group", "layer4.handlers.target_group"} {
		if !strings.Contains(string(out)+"\n", "\n"+id+"\n") && !strings.HasPrefix(string(out), id+"\n") {
			t.Errorf("caddy list-modules lacks %s", id)
		}
	}

	// The demo Caddyfile adapts to the JSON the README shows.
	adapted, err := exec.Command(bin, "adapt", "--config", "../examples/demo/Caddyfile").Output()
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	wantJSON, err := os.ReadFile("../examples/demo/caddy.json")
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	if err := json.Unmarshal(adapted, &got); err != nil {
		t.Fatalf("adapted config: %v", err)
	}
	if err := json.Unmarshal(wantJSON, &want); err != nil {
		t.Fatalf("examples/demo/caddy.json: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("caddy adapt of the demo Caddyfile:\n%s\ndiffers from examples/demo/caddy.json", adapted)
	}

	adminPort, httpPort := freePort(t), freePort(t)
	admin := fmt.Sprintf("http://localhost:%d", adminPort)
	cmd := exec.Command(bin, "run", "--config", "../examples/demo/Caddyfile")
	cmd.Env = append(os.Environ(), fmt.Sprintf("DEMO_ADMIN_PORT=%d", adminPort), fmt.Sprintf("DEMO_HTTP_PORT=%d", httpPort), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	startProcess(t, "caddy", cmd)
	in := &instance{t: t, admin: fmt.Sprintf("localhost:%d", adminPort), http: fmt.Sprintf("127.0.0.1:%d", httpPort)}
	waitFor(t, "the admin endpoint", 20*time.Second, func() bool {
		resp, err := http.Get(admin + "/config/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})

	a, b := newBackend(t, "a"), newBackend(t, "b")
	in.register("web", a.port(), b.port())
	in.waitStates("web", map[string]string{
		fmt.Sprintf("127.0.0.1:%d", a.port()): "healthy",
		fmt.Sprintf("127.0.0.1:%d", b.port()): "healthy",
	})
	if got := spread(t, in, 40, a, b); got["a"] != 20 || got["b"] != 20 {
		t.Fatalf("spread over two targets: %v", got)
	}
	in.mustAPI("POST", "/target-groups/web/targets/deregister", targets(a.port()), nil)
	if got := spread(t, in, 10, a, b); got["a"] != 0 || got["b"] != 10 {
		t.Fatalf("after deregistration: %v", got)
	}
}
