package integration_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"

	_ "github.com/caddy-targetgroup/caddy-targetgroup/integration"
)

// freePort returns a loopback port that nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// backend is a real HTTP server on loopback that answers with its name and
// counts the requests it serves.
type backend struct {
	name    string
	srv     *httptest.Server
	hits    atomic.Int64
	checks  atomic.Int64
	healthy atomic.Bool
	// failing makes proxied requests (not health checks) answer 503.
	failing atomic.Bool
	// delay slows every proxied request down (nanoseconds).
	delay atomic.Int64
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	b.healthy.Store(true)
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.UserAgent(), "Caddy-TargetGroup-HealthChecker") {
			b.checks.Add(1)
			if !b.healthy.Load() {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
			return
		}
		b.hits.Add(1)
		if b.failing.Load() {
			http.Error(w, "failing", http.StatusServiceUnavailable)
			return
		}
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			time.Sleep(d)
		}
		time.Sleep(time.Duration(b.delay.Load()))
		fmt.Fprint(w, b.name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) port() int { return b.srv.Listener.Addr().(*net.TCPAddr).Port }

// instance is an in-process Caddy with its admin endpoint and one HTTP
// listener on loopback.
type instance struct {
	t       *testing.T
	admin   string
	http    string
	storage string // the file_system storage root, unless the config sets one
	// plainErrors leaves the HTTP servers' error handling as configured
	// (expand otherwise renders every error with its message).
	plainErrors bool
}

// startCaddy loads cfg, in which {ADMIN} and {HTTP} stand for the two addresses.
func startCaddy(t *testing.T, cfg string) *instance {
	t.Helper()
	in := newInstance(t)
	if err := in.load(cfg); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
	return in
}

func newInstance(t *testing.T) *instance {
	return &instance{t: t, admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)), http: fmt.Sprintf("127.0.0.1:%d", freePort(t)), storage: t.TempDir()}
}

// expand fills in the addresses and, unless the config names a storage, a
// file_system storage of the test's own, so that no state leaks between
// tests or into the user's Caddy data directory.
func (in *instance) expand(cfg string) string {
	cfg = strings.NewReplacer("{ADMIN}", in.admin, "{HTTP}", in.http).Replace(cfg)
	var m map[string]any
	if err := json.Unmarshal([]byte(cfg), &m); err != nil {
		in.t.Fatalf("test config is not JSON: %v\n%s", err, cfg)
	}
	if _, ok := m["storage"]; !ok {
		m["storage"] = map[string]any{"module": "file_system", "root": in.storage}
	}
	// Every HTTP server renders its errors with their message, as an
	// operator's handle_errors would, so that tests can read why a request
	// failed (without it, Caddy answers an empty body).
	if apps, ok := m["apps"].(map[string]any); ok {
		if h, ok := apps["http"].(map[string]any); ok {
			servers, _ := h["servers"].(map[string]any)
			for _, srv := range servers {
				if srv, ok := srv.(map[string]any); ok && srv["errors"] == nil && !in.plainErrors {
					srv["errors"] = map[string]any{"routes": []any{map[string]any{"handle": []any{map[string]any{
						"handler": "static_response", "status_code": "{http.error.status_code}",
						"body": "{http.error.status_code} {http.error.message}",
					}}}}}
				}
			}
		}
	}
	out, _ := json.Marshal(m)
	return string(out)
}

func (in *instance) load(cfg string) error { return caddy.Load([]byte(in.expand(cfg)), true) }

// api calls the admin API and decodes the JSON answer into out (if not nil).
func (in *instance) api(method, path string, body any, out any) int {
	in.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, _ := json.Marshal(b)
		rd = bytes.NewReader(js)
	}
	req, _ := http.NewRequest(method, "http://"+in.admin+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		in.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 { // POST /load answers with no body
		if err := json.Unmarshal(raw, out); err != nil {
			in.t.Fatalf("%s %s: decoding %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode
}

// get sends one request through Caddy and returns the status and body.
func (in *instance) get(path string) (int, string) {
	in.t.Helper()
	resp, err := http.Get("http://" + in.http + path)
	if err != nil {
		in.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type healthAnswer struct {
	Targets []struct {
		Target struct {
			ID   string `json:"id"`
			Port int    `json:"port"`
			AZ   string `json:"availability_zone"`
		} `json:"target"`
		HealthCheckPort string `json:"health_check_port"`
		TargetHealth    struct {
			State       string `json:"state"`
			Reason      string `json:"reason"`
			Description string `json:"description"`
		} `json:"target_health"`
		InFlight int64 `json:"in_flight"`
	} `json:"targets"`
}

func (in *instance) health(group string) healthAnswer {
	in.t.Helper()
	var h healthAnswer
	if code := in.api("GET", "/target-groups/"+group+"/targets", nil, &h); code != 200 {
		in.t.Fatalf("describe target health of %s: status %d", group, code)
	}
	return h
}

// states maps "id:port" to the target's state.
func (in *instance) states(group string) map[string]string {
	in.t.Helper()
	out := map[string]string{}
	for _, e := range in.health(group).Targets {
		out[fmt.Sprintf("%s:%d", e.Target.ID, e.Target.Port)] = e.TargetHealth.State
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (in *instance) waitStates(group string, want map[string]string) {
	in.t.Helper()
	var got map[string]string
	waitFor(in.t, fmt.Sprintf("states %v of group %s", want, group), 15*time.Second, func() bool {
		got = in.states(group)
		for k, v := range want {
			if got[k] != v {
				return false
			}
		}
		return true
	})
}

func targets(ports ...int) map[string]any {
	ts := make([]map[string]any, len(ports))
	for i, p := range ports {
		ts[i] = map[string]any{"id": "127.0.0.1", "port": p}
	}
	return map[string]any{"targets": ts}
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// startProcess starts cmd and stops it when the test ends, logging its
// output if the test failed.
func startProcess(t *testing.T, name string, cmd *exec.Cmd) {
	t.Helper()
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
			t.Errorf("%s reported a data race", name)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, logs.String())
		}
	})
}
