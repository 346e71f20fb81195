package integration_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-targetgroup/caddy-targetgroup/integration"
)

// The console's tests: the handler on an httptest server (its JSON, its
// event stream, its writes and their protection), the console in a real
// Caddy across a reload and, with the built binary, an exit with a stream
// open. The browser test is console_browser_test.go.

// consoleSrv is a provisioned console served by an httptest server, as a
// site would serve it at any path; streams counts the event streams its
// handler is serving.
type consoleSrv struct {
	*httptest.Server
	streams atomic.Int64
	// unload cancels the console's config context, as unloading its
	// config does.
	unload context.CancelFunc
}

func newConsoleSrv(t *testing.T, readOnly bool) *consoleSrv {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	c := &integration.Console{ReadOnly: readOnly}
	if err := c.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	s := &consoleSrv{unload: cancel}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/api/events") {
			s.streams.Add(1)
			defer s.streams.Add(-1)
		}
		if err := c.ServeHTTP(w, r, nil); err != nil {
			t.Errorf("console: %v", err)
		}
	}))
	// Cleanups run last first: the streams end, then the server closes.
	t.Cleanup(s.Close)
	t.Cleanup(cancel)
	return s
}

// consoleGroupsConfig has group "web" with the quickest health checks and
// group "down" (whose targets the tests make fail), and no routes.
func consoleGroupsConfig(routes ...any) string {
	hc := `{"health_check": {` + hcFast + `}}`
	return caddyConfig{groups: map[string]any{"web": hc, "down": hc}, routes: routes}.json()
}

func getConsoleState(t *testing.T, url string) integration.ConsoleState {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st integration.ConsoleState
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return st
}

func consoleGroup(st integration.ConsoleState, name string) *integration.ConsoleGroup {
	for i := range st.Groups {
		if st.Groups[i].Name == name {
			return &st.Groups[i]
		}
	}
	return nil
}

// consoleTargetState is the state of target 127.0.0.1:port of group on
// the console ("" when it is not there).
func consoleTargetState(st integration.ConsoleState, group string, port int) string {
	g := consoleGroup(st, group)
	if g == nil {
		return ""
	}
	for _, d := range g.TargetHealth {
		if d.Target.Port == port {
			return string(d.TargetHealth.State)
		}
	}
	return ""
}

// consolePost sends a write as the console's page does (same origin, the
// console's header, JSON); headers overrides those, a "" value removing one.
func consolePost(t *testing.T, url string, body any, headers map[string]string) (int, apiError) {
	t.Helper()
	js, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(js))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(integration.ConsoleWriteHeader, "1")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ae apiError
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		if err := json.Unmarshal(raw, &ae); err != nil {
			t.Errorf("POST %s: error answer %q is not JSON", url, raw)
		}
	}
	return resp.StatusCode, ae
}

func consoleTargets(group string, ports ...int) map[string]any {
	return map[string]any{"group": group, "targets": targets(ports...)["targets"]}
}

// sseEvent is one Server-Sent Event.
type sseEvent struct{ id, event, data string }

// openEvents opens an event stream; its events arrive on the channel, which
// is closed when the stream ends. Cancelling ctx closes the stream.
func openEvents(t *testing.T, ctx context.Context, url string) <-chan sseEvent {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		resp.Body.Close()
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sseEvent, 64)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch {
			case line == "":
				if ev.event != "" || ev.data != "" {
					ch <- ev
				}
				ev = sseEvent{}
			case field == "id":
				ev.id = value
			case field == "event":
				ev.event = value
			case field == "data":
				ev.data += value
			}
		}
	}()
	return ch
}

// nextState waits for a state event for which cond holds.
func nextState(t *testing.T, ch <-chan sseEvent, timeout time.Duration, what string, cond func(integration.ConsoleState) bool) integration.ConsoleState {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("the stream ended while waiting for %s", what)
			}
			if ev.event != "state" {
				t.Fatalf("event %q, want state", ev.event)
			}
			var st integration.ConsoleState
			if err := json.Unmarshal([]byte(ev.data), &st); err != nil {
				t.Fatalf("event data %q: %v", ev.data, err)
			}
			if cond(st) {
				return st
			}
		case <-deadline:
			t.Fatalf("no event within %s with %s", timeout, what)
		}
	}
}

// waitEnd waits for the stream to end.
func waitEnd(t *testing.T, ch <-chan sseEvent, timeout time.Duration, what string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("the event stream did not end within %s of %s", timeout, what)
		}
	}
}

// TestConsolePage: the page, its assets and its JSON, at any path prefix,
// with relative URLs only and a strict content security policy.
func TestConsolePage(t *testing.T) {
	in := startCaddy(t, consoleGroupsConfig())
	a := newBackend(t, "a")
	in.mustAPI("POST", "/target-groups/web/targets", map[string]any{"targets": []any{
		map[string]any{"id": "127.0.0.1", "port": a.port(), "availability_zone": "zone-a", "weight": 3},
	}}, nil)
	in.waitStates("web", map[string]string{hcKey(a.port()): "healthy"})
	s := newConsoleSrv(t, false)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	resp, err := noRedirect.Get(s.URL + "/ops/console")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "./console/" {
		t.Errorf("GET /ops/console: %d Location %q, want 302 to ./console/", resp.StatusCode, resp.Header.Get("Location"))
	}
	for path, typ := range map[string]string{"/ops/console/": "text/html", "/ops/console/console.js": "text/javascript", "/ops/console/console.css": "text/css"} {
		resp, err := http.Get(s.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), typ) {
			t.Errorf("GET %s: %d %s, want 200 %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), typ)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
		// Nothing from elsewhere, nothing from the site's root.
		for _, bad := range []string{"http://", "https://", `"/`, `'/`, "(/", "src=\"/", "href=\"/"} {
			if bytes.Contains(body, []byte(bad)) && !(typ == "text/css" && bad == "(/") {
				t.Errorf("%s contains %q: every URL must be relative", path, bad)
			}
		}
	}

	st := getConsoleState(t, s.URL+"/ops/console/api/state")
	if !st.Running || st.ReadOnly || len(st.Groups) != 2 || st.Groups[0].Name != "down" || st.Groups[1].Name != "web" {
		t.Fatalf("state: %+v", st)
	}
	web := consoleGroup(st, "web")
	if web.ID == "" || web.ARN == "" || web.HealthCheck == nil || web.Attributes["deregistration_delay.timeout_seconds"] != "300" {
		t.Errorf("web's settings: %+v", web.GroupDescription)
	}
	if web.Health.Healthy != 1 || web.Health.Total != 1 || web.Health.RoutingFailover || web.Health.DNSFailover {
		t.Errorf("web's health: %+v", web.Health)
	}
	if len(web.TargetHealth) != 1 {
		t.Fatalf("web's targets: %+v", web.TargetHealth)
	}
	d := web.TargetHealth[0]
	if d.Target.Port != a.port() || d.Target.AvailabilityZone != "zone-a" || d.Target.Weight != 3 || d.TargetHealth.State != "healthy" {
		t.Errorf("web's target: %+v", d)
	}
	if down := consoleGroup(st, "down"); len(down.TargetHealth) != 0 || !down.Health.DNSFailover {
		t.Errorf("empty group down: %+v", down)
	}

	for _, c := range []struct{ method, path string }{
		{"POST", "/ops/api/state"}, {"GET", "/ops/api/register"}, {"DELETE", "/ops/"}, {"POST", "/ops/api/events"},
	} {
		req, _ := http.NewRequest(c.method, s.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
			t.Errorf("%s %s: %d Allow %q, want 405 naming the methods", c.method, c.path, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	if resp, err := http.Get(s.URL + "/ops/api/nothing"); err != nil || resp.StatusCode != 404 {
		t.Errorf("GET /ops/api/nothing: %v %v, want 404", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
}

// TestConsoleWrites: registering and deregistering through the console
// changes the live registry; read_only consoles, cross-site requests and
// requests without the console's header change nothing and get 403; domain
// errors come with the admin API's codes.
func TestConsoleWrites(t *testing.T) {
	in := startCaddy(t, consoleGroupsConfig())
	a, b := newBackend(t, "a"), newBackend(t, "b")
	s := newConsoleSrv(t, false)
	ro := newConsoleSrv(t, true)

	// Refused: nothing registered by any of these.
	for _, c := range []struct {
		name    string
		url     string
		headers map[string]string
	}{
		{"read_only console", ro.URL + "/api/register", nil},
		{"cross-site (Sec-Fetch-Site)", s.URL + "/api/register", map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"same-site, another origin", s.URL + "/api/register", map[string]string{"Sec-Fetch-Site": "same-site"}},
		{"cross-origin (Origin, older browser)", s.URL + "/api/register", map[string]string{"Sec-Fetch-Site": "", "Origin": "http://evil.example"}},
		{"no console header", s.URL + "/api/register", map[string]string{integration.ConsoleWriteHeader: ""}},
	} {
		if code, ae := consolePost(t, c.url, consoleTargets("web", a.port()), c.headers); code != http.StatusForbidden || ae.Error.Code != "AccessDenied" {
			t.Errorf("%s: %d %+v, want 403 AccessDenied", c.name, code, ae)
		}
	}
	if code, _ := consolePost(t, s.URL+"/api/register", consoleTargets("web", a.port()), map[string]string{"Content-Type": "text/plain"}); code != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain body: %d, want 415", code)
	}
	if st := in.states("web"); len(st) != 0 {
		t.Fatalf("refused writes registered %v", st)
	}
	if st := getConsoleState(t, ro.URL+"/api/state"); !st.ReadOnly {
		t.Errorf("read_only console's state: read_only false")
	}

	// Accepted: a same-origin page (Sec-Fetch-Site, or Origin matching
	// the host for browsers without it) and a script (neither header).
	host := strings.TrimPrefix(s.URL, "http://")
	if code, ae := consolePost(t, s.URL+"/ops/api/register", consoleTargets("web", a.port()), nil); code != 200 {
		t.Fatalf("register: %d %+v", code, ae)
	}
	if code, ae := consolePost(t, s.URL+"/api/register", consoleTargets("down", b.port()), map[string]string{"Sec-Fetch-Site": "", "Origin": "http://" + host}); code != 200 {
		t.Fatalf("register with a same-origin Origin: %d %+v", code, ae)
	}
	in.waitStates("web", map[string]string{hcKey(a.port()): "healthy"})
	if st := in.states("down"); st[hcKey(b.port())] == "" {
		t.Fatalf("down after register: %v", st)
	}
	if code, ae := consolePost(t, s.URL+"/api/deregister", consoleTargets("web", a.port()), map[string]string{"Sec-Fetch-Site": ""}); code != 200 {
		t.Fatalf("deregister from a script: %d %+v", code, ae)
	}
	if st := in.states("web"); st[hcKey(a.port())] != "draining" {
		t.Errorf("web after deregister: %v, want draining", st)
	}
	if code, ae := consolePost(t, ro.URL+"/api/deregister", consoleTargets("down", b.port()), nil); code != http.StatusForbidden {
		t.Errorf("read_only deregister: %d %+v", code, ae)
	}
	if st := in.states("down"); st[hcKey(b.port())] == "draining" {
		t.Errorf("a read_only console deregistered a target: %v", st)
	}

	// Errors of the domain, with the admin API's codes.
	for _, c := range []struct {
		name   string
		path   string
		body   any
		status int
		code   string
	}{
		{"no such group", "/api/register", consoleTargets("nope", a.port()), 404, "ResourceNotFoundException"},
		{"no group", "/api/register", map[string]any{"targets": []any{map[string]any{"id": "127.0.0.1"}}}, 400, "ValidationException"},
		{"not an IP", "/api/register", map[string]any{"group": "web", "targets": []any{map[string]any{"id": "example.com", "port": 80}}}, 400, "ValidationException"},
		{"no targets", "/api/deregister", map[string]any{"group": "web", "targets": []any{}}, 400, "ValidationException"},
		{"unknown field", "/api/register", map[string]any{"group": "web", "targets": []any{}, "force": true}, 400, "ValidationException"},
	} {
		if code, ae := consolePost(t, s.URL+c.path, c.body, nil); code != c.status || ae.Error.Code != c.code || ae.Error.Message == "" {
			t.Errorf("%s: %d %+v, want %d %s", c.name, code, ae, c.status, c.code)
		}
	}
}

// TestConsoleEvents: the stream sends the state at once and every change
// after it, a write's effect at once; it ends when the client goes and
// when the console's config is unloaded.
func TestConsoleEvents(t *testing.T) {
	startCaddy(t, consoleGroupsConfig())
	a := newBackend(t, "a")
	s := newConsoleSrv(t, false)

	ctx, closeStream := context.WithCancel(context.Background())
	defer closeStream()
	ch := openEvents(t, ctx, s.URL+"/ops/api/events")
	nextState(t, ch, 2*time.Second, "both groups", func(st integration.ConsoleState) bool { return len(st.Groups) == 2 })
	start := time.Now()
	if code, ae := consolePost(t, s.URL+"/ops/api/register", consoleTargets("web", a.port()), nil); code != 200 {
		t.Fatalf("register: %d %+v", code, ae)
	}
	nextState(t, ch, time.Second, "the registered target", func(st integration.ConsoleState) bool { return consoleTargetState(st, "web", a.port()) != "" })
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("the stream sent a write's effect after %s, want at once", d)
	}
	nextState(t, ch, 5*time.Second, "the target healthy", func(st integration.ConsoleState) bool { return consoleTargetState(st, "web", a.port()) == "healthy" })

	// The client goes: the handler returns.
	closeStream()
	waitFor(t, "the stream's handler to return after the client went", 2*time.Second, func() bool { return s.streams.Load() == 0 })

	// The config is unloaded: the stream ends, whatever the client does.
	ch = openEvents(t, context.Background(), s.URL+"/api/events")
	nextState(t, ch, 2*time.Second, "a first state", func(integration.ConsoleState) bool { return true })
	s.unload()
	waitEnd(t, ch, time.Second, "the config's unloading")
}

// TestConsoleReload: in a real Caddy, a reload ends the console's streams
// at once, the reload does not wait for them, and the new config's console
// answers (here mounted twice, once read_only).
func TestConsoleReload(t *testing.T) {
	console := map[string]any{"handler": "target_groups_console"}
	in := startCaddy(t, consoleGroupsConfig(route("/ops/*", console)))
	ch := openEvents(t, context.Background(), "http://"+in.http+"/ops/api/events")
	nextState(t, ch, 2*time.Second, "both groups", func(st integration.ConsoleState) bool { return len(st.Groups) == 2 })

	start := time.Now()
	if err := in.load(consoleGroupsConfig(route("/ops/*", console), route("/view/*", map[string]any{"handler": "target_groups_console", "read_only": true}))); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the reload took %s with a console stream open", d)
	}
	waitEnd(t, ch, 2*time.Second, "a reload")
	if st := getConsoleState(t, "http://"+in.http+"/view/api/state"); !st.ReadOnly || len(st.Groups) != 2 {
		t.Errorf("the new config's read_only console: %+v", st)
	}
	ch = openEvents(t, context.Background(), "http://"+in.http+"/ops/api/events")
	nextState(t, ch, 2*time.Second, "a state after the reload", func(st integration.ConsoleState) bool { return !st.ReadOnly && len(st.Groups) == 2 })
}

// TestConsoleStrippedPrefix: mounted under handle_path (its prefix stripped
// before the console sees the request), the page still redirects to the
// path the browser asked for with a slash, so that its relative URLs
// resolve under the prefix.
func TestConsoleStrippedPrefix(t *testing.T) {
	in := startCaddy(t, consoleGroupsConfig(route("/tools/ops*",
		map[string]any{"handler": "rewrite", "strip_path_prefix": "/tools/ops"},
		map[string]any{"handler": "target_groups_console"})))
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for path, want := range map[string]string{"/tools/ops": "302 ./ops/", "/tools/ops/": "200 ", "/tools/ops/console.js": "200 "} {
		resp, err := noRedirect.Get("http://" + in.http + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("Location")); got != want {
			t.Errorf("GET %s: %s, want %s", path, got, want)
		}
	}
	if st := getConsoleState(t, "http://"+in.http+"/tools/ops/api/state"); len(st.Groups) != 2 {
		t.Errorf("state under a stripped prefix: %+v", st)
	}
}

// TestConsoleNoApp: without a target_groups app the page says so, and
// writes get 503.
func TestConsoleNoApp(t *testing.T) {
	in := startCaddy(t, caddyConfig{routes: []any{route("", map[string]any{"handler": "target_groups_console"})}}.json())
	st := getConsoleState(t, "http://"+in.http+"/api/state")
	if st.Running || !strings.Contains(st.Message, "not running") || st.Groups == nil {
		t.Errorf("state without the app: %+v", st)
	}
	if code, ae := consolePost(t, "http://"+in.http+"/api/register", consoleTargets("web", 8080), nil); code != http.StatusServiceUnavailable {
		t.Errorf("register without the app: %d %+v", code, ae)
	}
}

// TestConsoleCaddyfileArgs: the directive's argument and what it refuses.
func TestConsoleCaddyfileArgs(t *testing.T) {
	for in, want := range map[string]string{
		"target_groups_console":                         "",
		"target_groups_console read_only":               "",
		"target_groups_console readonly":                "unrecognized argument 'readonly'",
		"target_groups_console read_only read_only":     "wrong argument count",
		"target_groups_console {\n\tread_only\n}":       "takes no block",
		"target_groups_console read_only {\n\tx\n}":     "takes no block",
		"target_groups_console read_only\n":             "",
		"target_groups_console read_only # a comment\n": "",
	} {
		var c integration.Console
		err := c.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", in, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%q: error %v, want one with %q", in, err, want)
		case want == "" && c.ReadOnly != strings.Contains(in, "read_only"):
			t.Errorf("%q: read_only %v", in, c.ReadOnly)
		}
	}
}

// TestConsoleBinaryExit: the built Caddy exits at once on SIGTERM, and
// reloads at once, with a console stream open (the HTTP server's shutdown
// ends the streams before it waits for requests, which it does for ever
// by default on exit).
func TestConsoleBinaryExit(t *testing.T) {
	t.Parallel()
	p := newCaddyProc(t)
	cfg := consoleGroupsConfig(route("/ops/*", map[string]any{"handler": "target_groups_console"}))
	p.start(p.expand(cfg))
	events := "http://" + p.http + "/ops/api/events"
	ch := openEvents(t, context.Background(), events)
	nextState(t, ch, 5*time.Second, "both groups", func(st integration.ConsoleState) bool { return len(st.Groups) == 2 })

	start := time.Now()
	// A changed config (Caddy skips loading the same one again).
	p.reload(p.expand(consoleGroupsConfig(route("/ops/*", map[string]any{"handler": "target_groups_console"}), route("/view/*", map[string]any{"handler": "target_groups_console", "read_only": true}))))
	waitEnd(t, ch, 3*time.Second, "a reload")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("reload with a stream open took %s", d)
	}

	ch = openEvents(t, context.Background(), events)
	nextState(t, ch, 5*time.Second, "a state after the reload", func(st integration.ConsoleState) bool { return len(st.Groups) == 2 })
	start = time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exit:
	case <-time.After(5 * time.Second):
		t.Fatalf("caddy did not exit within 5 s of SIGTERM with a console stream open")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("caddy took %s to exit with a console stream open", d)
	}
	waitEnd(t, ch, time.Second, "the exit")
}
