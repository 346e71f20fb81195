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
	_ "github.com/caddy-targetgroup/caddy-targetgroup/targetgroup/adminapi"
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

// caddyConfig is the one builder of the tests' Caddy configs. Its JSON has
// {ADMIN} and {HTTP} for the admin endpoint's and the HTTP server's
// addresses, which instance.expand (in process) and caddyProc.expand (the
// built binary) fill in, together with a storage of the test's own.
type caddyConfig struct {
	// groups are the target groups by name, each a map or its JSON text.
	// With neither groups nor app, the config has no target_groups app.
	groups map[string]any
	// app holds the target_groups app's other fields (allowed_cidrs,
	// quotas).
	app map[string]any
	// routes are those of one HTTP server on {HTTP}; none: no http app.
	routes []any
	// layer4 are the layer4 app's servers by name; none: no layer4 app.
	layer4 map[string]any
	// top holds further top-level members (storage, logging).
	top map[string]any
	// apps holds further apps by name (events).
	apps map[string]any
}

func (c caddyConfig) json() string {
	apps := map[string]any{}
	if c.groups != nil || c.app != nil {
		tg := map[string]any{}
		for k, v := range c.app {
			tg[k] = v
		}
		groups := map[string]any{}
		for name, g := range c.groups {
			if s, ok := g.(string); ok {
				g = json.RawMessage(s)
			}
			groups[name] = g
		}
		tg["groups"] = groups
		apps["target_groups"] = tg
	}
	if len(c.routes) > 0 {
		apps["http"] = map[string]any{"servers": map[string]any{"s": map[string]any{
			"listen":          []string{"{HTTP}"},
			"automatic_https": map[string]any{"disable": true},
			"routes":          c.routes,
		}}}
	}
	if len(c.layer4) > 0 {
		apps["layer4"] = map[string]any{"servers": c.layer4}
	}
	for name, app := range c.apps {
		apps[name] = app
	}
	cfg := map[string]any{"admin": map[string]any{"listen": "{ADMIN}"}}
	if len(apps) > 0 {
		cfg["apps"] = apps
	}
	for k, v := range c.top {
		cfg[k] = v
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(fmt.Sprintf("test config: %v", err)) // a group's JSON text is not JSON
	}
	return string(b)
}

// route is an HTTP route: requests whose path matches path ("" for every
// request) go through the handlers.
func route(path string, handlers ...any) map[string]any {
	r := map[string]any{"handle": handlers}
	if path != "" {
		r["match"] = []any{map[string]any{"path": []string{path}}}
	}
	return r
}

// tgHandler is the target_group handler of group (HTTP or layer 4).
func tgHandler(group string) map[string]any {
	return map[string]any{"handler": "target_group", "group": group}
}

// groupRoutes routes /<group> to each group through its target_group
// handler.
func groupRoutes(groups ...string) []any {
	routes := make([]any, len(groups))
	for i, g := range groups {
		routes[i] = route("/"+g, tgHandler(g))
	}
	return routes
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

// mustAPI calls the admin API as api does, for a call the test relies on
// (setup, a change the test goes on from): any answer but 200 fails the
// test at once, with the answer, rather than later as a confusing timeout.
func (in *instance) mustAPI(method, path string, body any, out any) {
	in.t.Helper()
	var raw json.RawMessage
	if code := in.api(method, path, body, &raw); code != http.StatusOK {
		in.t.Fatalf("%s %s: status %d: %s", method, path, code, raw)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			in.t.Fatalf("%s %s: decoding %q: %v", method, path, raw, err)
		}
	}
}

// register registers the loopback targets of ports in group.
func (in *instance) register(group string, ports ...int) {
	in.t.Helper()
	in.mustAPI("POST", "/target-groups/"+group+"/targets", targets(ports...), nil)
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
