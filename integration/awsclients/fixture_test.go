package awsclients

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// caddyBinary is the Caddy under test: CADDY_BINARY, or the one make
// builds at ../../bin/caddy.
func caddyBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("CADDY_BINARY")
	if bin == "" {
		bin, _ = filepath.Abs("../../bin/caddy")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no Caddy to test at %s (make caddy builds one, or set CADDY_BINARY): %v", bin, err)
	}
	return bin
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// caddy is one running Caddy process: its admin endpoint, and a site that
// routes /<group>/ to each group named when it started.
type caddy struct {
	t     *testing.T
	admin string // http://127.0.0.1:<port>
	site  string // http://127.0.0.1:<port>
}

// startCaddy runs Caddy with an empty target_groups app and a site whose
// path /<group>/ is served by the target_group handler of that group,
// for each of routed, which may not exist yet (the handler answers 503
// until it does). apps holds more app config, merged in.
func startCaddy(t *testing.T, routed []string, apps map[string]any) *caddy {
	t.Helper()
	bin := caddyBinary(t)
	adminPort, sitePort := freePort(t), freePort(t)
	var routes []any
	for _, g := range routed {
		routes = append(routes, map[string]any{
			"match":  []any{map[string]any{"path": []string{"/" + g + "/*"}}},
			"handle": []any{map[string]any{"handler": "target_group", "group": g}},
		})
	}
	tg := map[string]any{}
	if v, ok := apps["target_groups"].(map[string]any); ok {
		tg = v
	}
	cfg := map[string]any{
		"admin":   map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", adminPort)},
		"storage": map[string]any{"module": "file_system", "root": t.TempDir()},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "INFO"}}},
		"apps": map[string]any{
			"target_groups": tg,
			"http": map[string]any{"servers": map[string]any{"site": map[string]any{
				"listen": []string{fmt.Sprintf("127.0.0.1:%d", sitePort)},
				"routes": routes,
			}}},
		},
	}
	for k, v := range apps {
		if k != "target_groups" {
			cfg["apps"].(map[string]any)[k] = v
		}
	}
	dir := t.TempDir()
	b, _ := json.Marshal(cfg)
	path := filepath.Join(dir, "caddy.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", path)
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		// A Caddy built with the race detector (make test builds one)
		// reports races in its log and goes on.
		if strings.Contains(logs.String(), "DATA RACE") {
			t.Errorf("caddy reported a data race")
		}
		if t.Failed() {
			t.Logf("caddy output:\n%s", logs.String())
		}
	})
	c := &caddy{t: t, admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort), site: fmt.Sprintf("http://127.0.0.1:%d", sitePort)}
	waitFor(t, "Caddy's admin endpoint", 30*time.Second, func() bool {
		resp, err := http.Get(c.admin + "/target-groups/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return c
}

// get fetches a path of the site and returns the status and body.
func (c *caddy) get(path string) (int, string) {
	c.t.Helper()
	resp, err := http.Get(c.site + path)
	if err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// backend is an HTTP server on 127.0.0.1 that answers every request with
// "hello from <name>".
type backend struct {
	name string
	port int
}

func newBackend(t *testing.T, name string) backend {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s", name)
	}))
	t.Cleanup(srv.Close)
	return backend{name: name, port: srv.Listener.Addr().(*net.TCPAddr).Port}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// servedBy sends requests to path until every backend named in want has
// answered one, failing after a deadline; it returns the answers seen.
func (c *caddy) servedBy(path string, want ...string) map[string]int {
	c.t.Helper()
	seen := map[string]int{}
	waitFor(c.t, fmt.Sprintf("%s to be served by %v", path, want), 20*time.Second, func() bool {
		status, body := c.get(path)
		if status == http.StatusOK {
			seen[strings.TrimPrefix(body, "hello from ")]++
		}
		for _, w := range want {
			if seen[w] == 0 {
				return false
			}
		}
		return true
	})
	return seen
}
