package integration_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The reliability suite drives a real Caddy process (the binary built with
// xcaddy) under steady load from a pool of HTTP clients in this process,
// each with its own keep-alive connection, and counts every answer that is
// not a 2xx and every transport error as a failed request.
//
// RELIABILITY_SECONDS sets how long the churn scenario runs (default 10, the
// short form of `make test`; `make reliability` runs 60). It does not depend
// on -short, which skips the suite because it needs the built binary.
//
// The settings are those a careful operator would use: health checks every
// 5s (the AWS minimum) with a 2s timeout and thresholds of 2, a short
// deregistration delay, and — where requests must survive a backend dying —
// the stock reverse_proxy with the group as its dynamic upstreams and
// selection policy, lb_retries 2 and passive health (2 failed requests).

func reliabilityDuration(t *testing.T) time.Duration {
	s := os.Getenv("RELIABILITY_SECONDS")
	if s == "" {
		return 10 * time.Second
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("RELIABILITY_SECONDS=%q: want a positive number of seconds", s)
	}
	return time.Duration(n) * time.Second
}

// relHealthCheck is the health check of every reliability scenario.
func relHealthCheck(extra map[string]any) map[string]any {
	hc := map[string]any{"path": "/health", "interval": "5s", "timeout": "2s", "healthy_threshold": 2, "unhealthy_threshold": 2}
	for k, v := range extra {
		hc[k] = v
	}
	return hc
}

// relOptions shape the config of a scenario.
type relOptions struct {
	healthCheck map[string]any
	attributes  map[string]string
	// retries > 0 uses reverse_proxy with the target_group upstreams and
	// policy and that many lb_retries; 0 uses the target_group handler.
	retries int
	// handlerRetries is the target_group handler's retries (0: its default).
	handlerRetries int
	// gen is sent back in every response's X-Gen header, so that a reload
	// can be seen to take effect.
	gen int
	// extraGroups are further config groups.
	extraGroups map[string]any
}

// caddyProc is one Caddy process with its own directory: config, storage,
// HOME and XDG directories, and its log.
type caddyProc struct {
	t     *testing.T
	bin   string
	dir   string
	admin string
	http  string
	cmd   *exec.Cmd
	exit  chan struct{}
	log   *os.File
}

func newCaddyProc(t *testing.T) *caddyProc {
	p := &caddyProc{t: t, bin: caddyBinary(t), dir: t.TempDir(), admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)), http: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	t.Cleanup(func() {
		p.kill()
		// A Caddy built with the race detector (make reliability) reports
		// races in its log and goes on.
		if b, _ := os.ReadFile(filepath.Join(p.dir, "caddy.log")); bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			t.Errorf("the Caddy process reported a data race")
		}
		if t.Failed() {
			p.dumpLog()
		}
	})
	return p
}

func (p *caddyProc) config(o relOptions) []byte {
	group := map[string]any{"port": 80, "health_check": o.healthCheck}
	if o.attributes != nil {
		group["attributes"] = o.attributes
	}
	groups := map[string]any{"web": group}
	for k, v := range o.extraGroups {
		groups[k] = v
	}
	proxy := map[string]any{"handler": "target_group", "group": "web"}
	if o.handlerRetries != 0 {
		proxy["retries"] = o.handlerRetries
	}
	if o.retries > 0 {
		proxy = map[string]any{
			"handler":           "reverse_proxy",
			"dynamic_upstreams": map[string]any{"source": "target_group", "group": "web"},
			"load_balancing": map[string]any{
				"selection_policy": map[string]any{"policy": "target_group", "group": "web"},
				"retries":          o.retries,
			},
		}
	}
	gen := map[string]any{"handler": "headers", "response": map[string]any{"set": map[string]any{"X-Gen": []string{strconv.Itoa(o.gen)}}}}
	return p.expand(caddyConfig{groups: groups, routes: []any{route("", gen, proxy)}}.json())
}

// expand fills in the process's addresses and storage.
func (p *caddyProc) expand(cfg string) []byte {
	cfg = strings.NewReplacer("{ADMIN}", p.admin, "{HTTP}", p.http).Replace(cfg)
	var m map[string]any
	if err := json.Unmarshal([]byte(cfg), &m); err != nil {
		p.t.Fatalf("test config is not JSON: %v", err)
	}
	m["storage"] = map[string]any{"module": "file_system", "root": filepath.Join(p.dir, "storage")}
	out, _ := json.Marshal(m)
	return out
}

// start runs Caddy on the config and waits for its admin endpoint.
func (p *caddyProc) start(cfg []byte) {
	p.t.Helper()
	file := filepath.Join(p.dir, "caddy.json")
	if err := os.WriteFile(file, cfg, 0o600); err != nil {
		p.t.Fatal(err)
	}
	home := filepath.Join(p.dir, "home")
	log, err := os.OpenFile(filepath.Join(p.dir, "caddy.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	p.log = log
	p.cmd = exec.Command(p.bin, "run", "--config", file)
	p.cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	exit := make(chan struct{})
	p.exit = exit
	go func(cmd *exec.Cmd) { _ = cmd.Wait(); close(exit) }(p.cmd)
	waitFor(p.t, "the admin endpoint", 20*time.Second, func() bool {
		select {
		case <-exit:
			p.dumpLog()
			p.t.Fatal("caddy exited")
		default:
		}
		resp, err := http.Get("http://" + p.admin + "/config/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
}

// kill ends the process with SIGKILL, as a crash would.
func (p *caddyProc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exit
	p.cmd = nil
	p.log.Close()
}

func (p *caddyProc) dumpLog() {
	b, _ := os.ReadFile(filepath.Join(p.dir, "caddy.log"))
	if len(b) > 20000 {
		b = b[len(b)-20000:]
	}
	p.t.Logf("caddy log (tail):\n%s", b)
}

// mustAPI is instance.mustAPI against the process.
func (p *caddyProc) mustAPI(method, path string, body any, out any) {
	p.t.Helper()
	(&instance{t: p.t, admin: p.admin}).mustAPI(method, path, body, out)
}

// targetState is one entry of DescribeTargetHealth.
type targetState struct {
	state    string
	reason   string
	inFlight int64
}

func (p *caddyProc) describe(group string) map[int]targetState {
	p.t.Helper()
	var h healthAnswer
	p.mustAPI("GET", "/target-groups/"+group+"/targets", nil, &h)
	out := map[int]targetState{}
	for _, e := range h.Targets {
		out[e.Target.Port] = targetState{e.TargetHealth.State, e.TargetHealth.Reason, e.InFlight}
	}
	return out
}

func (p *caddyProc) waitHealthy(group string, ports ...int) {
	p.t.Helper()
	waitFor(p.t, fmt.Sprintf("targets %v of %s healthy", ports, group), 20*time.Second, func() bool {
		d := p.describe(group)
		for _, port := range ports {
			if d[port].state != "healthy" {
				return false
			}
		}
		return true
	})
}

// loadGen keeps a steady load on a URL from a pool of clients, each with
// its own keep-alive connection, and records every failed request.
type loadGen struct {
	url     string
	stop    chan struct{}
	wg      sync.WaitGroup
	ok      atomic.Int64
	failed  atomic.Int64
	redials atomic.Int64 // connects to Caddy refused or reset before any request was sent
	mu      sync.Mutex
	samples []string // the first failures, with their time
	kinds   map[string]int
	last    time.Time // last failure
	served  map[string]int64
	gens    map[string]int64
}

// startLoad starts workers clients, each sending a request, reading the
// whole answer and pausing for pause before the next.
func startLoad(t *testing.T, url string, workers int, pause time.Duration) *loadGen {
	l := &loadGen{url: url, stop: make(chan struct{}), kinds: map[string]int{}, served: map[string]int64{}, gens: map[string]int64{}}
	for range workers {
		l.wg.Add(1)
		go l.worker(pause)
	}
	t.Cleanup(l.finish)
	return l
}

func (l *loadGen) worker(pause time.Duration) {
	defer l.wg.Done()
	tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	served := map[string]int64{}
	gens := map[string]int64{}
	defer func() {
		l.mu.Lock()
		for k, v := range served {
			l.served[k] += v
		}
		for k, v := range gens {
			l.gens[k] += v
		}
		l.mu.Unlock()
	}()
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		resp, err := client.Get(l.url)
		if err != nil {
			// No answer came: the connect was refused or reset, or the
			// connection was closed before a response, which a config
			// reload's listener hand-over and the old server's shutdown can
			// do (Caddy core, not the plugin; seen with the race detector's
			// slower Caddy, before and after the plugin's own changes). A
			// client tries an idempotent request again on a new connection,
			// as browsers do (RFC 9112 9.3.1); the count is reported, and a
			// second failure is a failure.
			l.redials.Add(1)
			resp, err = client.Get(l.url)
		}
		if err != nil {
			l.fail("transport error: " + err.Error())
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			l.fail(fmt.Sprintf("status %d, reading body: %v", resp.StatusCode, err))
		case resp.StatusCode < 200 || resp.StatusCode > 299:
			l.fail(fmt.Sprintf("status %d: %.200s", resp.StatusCode, strings.TrimSpace(string(body))))
		default:
			l.ok.Add(1)
			served[string(body)]++
			gens[resp.Header.Get("X-Gen")]++
		}
		if pause > 0 {
			time.Sleep(pause)
		}
	}
}

func (l *loadGen) fail(what string) {
	l.failed.Add(1)
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = now
	kind := what
	if i := strings.IndexAny(kind, ":"); i > 0 && strings.HasPrefix(kind, "status") {
		kind = kind[:i]
	}
	l.kinds[kind]++
	if len(l.samples) < 20 {
		l.samples = append(l.samples, now.Format("15:04:05.000")+" "+what)
	}
}

// finish stops the load and waits for the requests in flight.
func (l *loadGen) finish() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *loadGen) lastFailure() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

func (l *loadGen) report(t *testing.T) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	names := make([]string, 0, len(l.served))
	for k := range l.served {
		names = append(names, k)
	}
	sort.Strings(names)
	var spread []string
	for _, k := range names {
		spread = append(spread, fmt.Sprintf("%s=%d", k, l.served[k]))
	}
	s := fmt.Sprintf("%d requests, %d failed, %d reconnects; served by %s", l.ok.Load()+l.failed.Load(), l.failed.Load(), l.redials.Load(), strings.Join(spread, " "))
	if len(l.kinds) > 0 {
		s += fmt.Sprintf("; failures by kind %v; first: %s", l.kinds, strings.Join(l.samples, " | "))
	}
	return s
}

// expectNoFailures checks the load's outcome: something was served, and
// nothing failed.
func (l *loadGen) expectNoFailures(t *testing.T) {
	t.Helper()
	l.finish()
	t.Log(l.report(t))
	if l.ok.Load() == 0 {
		t.Fatal("no request succeeded")
	}
	if n := l.failed.Load(); n != 0 {
		t.Fatalf("%d requests failed", n)
	}
}

// killBackend stops a backend the way a crash does: its listener closes
// and every connection is cut.
func killBackend(b *backend) {
	b.srv.Listener.Close()
	b.srv.CloseClientConnections()
}

func TestReliability(t *testing.T) {
	t.Parallel()
	// Every scenario has a Caddy process of its own, so most run side by
	// side. Those with tight timing run alone first: Draining takes a
	// backend's request count a fixed time after a deregistration, and
	// BackendDeath bounds how soon a death is noticed, both of which the
	// load of another scenario could stretch.
	t.Run("Draining", testReliabilityDraining)
	t.Run("BackendDeath", testReliabilityBackendDeath)
	for _, s := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"Churn", testReliabilityChurn},
		{"Reloads", testReliabilityReloads},
		{"Restart", testReliabilityRestart},
	} {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			s.run(t)
		})
	}
}

// Churn: every second a new backend is registered, the oldest is
// deregistered once it has company, backends flip their health check
// between passing and failing, and deregistered backends stop once their
// deregistration delay is over. At least one target stays healthy (in
// Caddy's view and in fact) at all times. No request may fail.
func testReliabilityChurn(t *testing.T) {
	dur := reliabilityDuration(t)
	p := newCaddyProc(t)
	p.start(p.config(relOptions{
		healthCheck: relHealthCheck(nil),
		attributes:  map[string]string{"deregistration_delay.timeout_seconds": "2"},
	}))

	type member struct {
		b       *backend
		retired bool // deregistered
	}
	var (
		seq     int
		members []*member // registered, oldest first
		leaving []*member // deregistered, waiting for the delay to pass
		stopped int
	)
	// stopLeft stops the deregistered backends that Caddy has let go of,
	// given the group's targets d.
	stopLeft := func(d map[int]targetState) {
		kept := leaving[:0]
		for _, m := range leaving {
			if _, registered := d[m.b.port()]; registered {
				kept = append(kept, m)
				continue
			}
			m.b.srv.Close()
			stopped++
		}
		leaving = kept
	}
	spawn := func() *member {
		seq++
		m := &member{b: newBackend(t, "b"+strconv.Itoa(seq))}
		p.mustAPI("POST", "/target-groups/web/targets", targets(m.b.port()), nil)
		members = append(members, m)
		return m
	}
	first := []*member{spawn(), spawn()}
	p.waitHealthy("web", first[0].b.port(), first[1].b.port())

	load := startLoad(t, "http://"+p.http+"/", 8, time.Millisecond)
	var registrations, deregistrations, flips int
	registrations = 2
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		<-tick.C
		spawn()
		registrations++
		d := p.describe("web")
		// safe: healthy in Caddy's view and passing its checks, so it will
		// stay healthy until we act on it.
		safe := func(except ...*member) int {
			n := 0
			for _, m := range members {
				if d[m.b.port()].state == "healthy" && m.b.healthy.Load() && !containsMember(except, m) {
					n++
				}
			}
			return n
		}
		var out *member
		if len(members) > 3 && safe(members[0]) >= 1 {
			out = members[0]
			p.mustAPI("POST", "/target-groups/web/targets/deregister", targets(out.b.port()), nil)
			members = members[1:]
			out.retired = true
			leaving = append(leaving, out)
			deregistrations++
		}
		if len(members) > 0 {
			m := members[rng.IntN(len(members))]
			switch {
			case !m.b.healthy.Load():
				m.b.healthy.Store(true)
				flips++
			case safe(m) >= 1:
				m.b.healthy.Store(false)
				flips++
			}
		}
		stopLeft(d)
	}
	// The last deregistered backends stop too, under load, once Caddy has
	// let go of them.
	waitFor(t, "the deregistered targets to leave the group", 15*time.Second, func() bool {
		stopLeft(p.describe("web"))
		return len(leaving) == 0
	})
	load.finish()
	t.Logf("churn for %s: %d registrations, %d deregistrations, %d health flips, %d backends stopped", dur, registrations, deregistrations, flips, stopped)
	load.expectNoFailures(t)
	if deregistrations == 0 || stopped == 0 {
		t.Fatalf("the churn did not churn: %d deregistrations, %d backends stopped", deregistrations, stopped)
	}
}

func containsMember[T comparable](list []T, x T) bool {
	for _, v := range list {
		if v == x {
			return true
		}
	}
	return false
}

// Draining: long requests (2s) in flight on a target when it is
// deregistered all complete, while steady load goes on; no new request
// reaches the target after its deregistration.
func testReliabilityDraining(t *testing.T) {
	p := newCaddyProc(t)
	p.start(p.config(relOptions{
		healthCheck: relHealthCheck(nil),
		attributes:  map[string]string{"deregistration_delay.timeout_seconds": "10"},
	}))
	a, b := newBackend(t, "a"), newBackend(t, "b")
	p.mustAPI("POST", "/target-groups/web/targets", targets(a.port(), b.port()), nil)
	p.waitHealthy("web", a.port(), b.port())
	load := startLoad(t, "http://"+p.http+"/", 4, 2*time.Millisecond)

	const long = 8
	type result struct {
		code int
		body string
		err  error
		took time.Duration
	}
	results := make(chan result, long)
	for range long {
		go func() {
			start := time.Now()
			resp, err := http.Get("http://" + p.http + "/?sleep=2s")
			if err != nil {
				results <- result{err: err}
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- result{resp.StatusCode, string(body), err, time.Since(start)}
		}()
	}
	// Deregister a while its long requests are in flight.
	waitFor(t, "long requests in flight on a", 5*time.Second, func() bool { return p.describe("web")[a.port()].inFlight > 0 })
	p.mustAPI("POST", "/target-groups/web/targets/deregister", targets(a.port()), nil)
	inFlight := p.describe("web")[a.port()]
	if inFlight.state != "draining" {
		t.Fatalf("a is %+v after deregistration", inFlight)
	}
	// Requests already on their way when the call returned may still arrive.
	time.Sleep(200 * time.Millisecond)
	hitsAfter := a.hits.Load()

	onA := 0
	for range long {
		r := <-results
		if r.err != nil || r.code != 200 {
			t.Errorf("long request: %d %q %v", r.code, r.body, r.err)
			continue
		}
		if r.body == "a" {
			onA++
		}
	}
	if onA == 0 {
		t.Fatal("no long request was on the deregistered target")
	}
	// Once its long requests are done, the draining target reports none in flight.
	waitFor(t, "a drained", 5*time.Second, func() bool {
		s := p.describe("web")[a.port()]
		return s.state == "draining" && s.inFlight == 0
	})
	time.Sleep(500 * time.Millisecond)
	load.expectNoFailures(t)
	if n := a.hits.Load(); n != hitsAfter {
		t.Fatalf("a received %d requests after its deregistration", n-hitsAfter)
	}
	t.Logf("%d long requests on a completed during its deregistration (in flight then: %d)", onA, inFlight.inFlight)
}

// Reloads: 20 config reloads through POST /load under load. No request
// fails, every registration stays, and no target's health is reset.
func testReliabilityReloads(t *testing.T) {
	p := newCaddyProc(t)
	opts := relOptions{healthCheck: relHealthCheck(nil), attributes: map[string]string{"deregistration_delay.timeout_seconds": "20"}}
	p.start(p.config(opts))
	bs := []*backend{newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")}
	ports := []int{bs[0].port(), bs[1].port(), bs[2].port()}
	p.mustAPI("POST", "/target-groups/web/targets", targets(ports...), nil)
	p.waitHealthy("web", ports...)
	want := p.describe("web")
	load := startLoad(t, "http://"+p.http+"/", 8, time.Millisecond)

	time.Sleep(300 * time.Millisecond)
	const reloads = 20
	for i := 1; i <= reloads; i++ {
		opts.gen = i
		// Every other reload changes the group's settings too, which
		// replaces its spec (and health check jobs) in place.
		opts.attributes = map[string]string{"deregistration_delay.timeout_seconds": strconv.Itoa(20 + i%2*10)}
		opts.healthCheck = relHealthCheck(map[string]any{"timeout": fmt.Sprintf("%ds", 2+i%2)})
		p.mustAPI("POST", "/load", p.config(opts), nil)
		if got := p.describe("web"); !reflect.DeepEqual(stateOnly(got), stateOnly(want)) {
			t.Fatalf("after reload %d the targets are %v, want %v", i, got, want)
		}
		time.Sleep(250 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	load.finish()
	if got := p.describe("web"); !reflect.DeepEqual(stateOnly(got), stateOnly(want)) {
		t.Fatalf("after %d reloads the targets are %v, want %v", reloads, got, want)
	}
	if load.gens[strconv.Itoa(reloads)] == 0 {
		t.Fatalf("no response came from the last config: %v", load.gens)
	}
	var attrs struct {
		Attributes map[string]string `json:"attributes"`
	}
	p.mustAPI("GET", "/target-groups/web/attributes", nil, &attrs)
	if got := attrs.Attributes["deregistration_delay.timeout_seconds"]; got != "20" {
		t.Fatalf("deregistration delay %s after the last reload, want 20", got)
	}
	t.Logf("%d reloads; responses per config generation: %v", reloads, load.gens)
	load.expectNoFailures(t)
}

// stateOnly drops the in-flight counts, which change with the load.
func stateOnly(m map[int]targetState) map[int]string {
	out := map[int]string{}
	for k, v := range m {
		out[k] = v.state + "/" + v.reason
	}
	return out
}

// Restart: registrations into a config group, a group created through the
// API with changed attributes and health check, and a deregistration; then
// kill -9 right after the last call returns and start again with the same
// storage. Every group, setting, attribute and registration is back, and
// the targets take traffic again once their first check passes.
func testReliabilityRestart(t *testing.T) {
	p := newCaddyProc(t)
	opts := relOptions{healthCheck: relHealthCheck(nil), attributes: map[string]string{"deregistration_delay.timeout_seconds": "300"}}
	p.start(p.config(opts))
	a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
	d, e := newBackend(t, "d"), newBackend(t, "e")
	p.mustAPI("POST", "/target-groups/web/targets", map[string]any{"targets": []map[string]any{
		{"id": "127.0.0.1", "port": a.port(), "availability_zone": "zone-a"},
		{"id": "127.0.0.1", "port": b.port(), "weight": 7},
		{"id": "127.0.0.1", "port": c.port()},
	}}, nil)
	p.mustAPI("POST", "/target-groups/", map[string]any{
		"name": "api", "client_token": "deploy-42", "port": d.port(),
		"health_check": relHealthCheck(map[string]any{"matcher": map[string]any{"http_code": "200-299"}}),
		"tags":         map[string]string{"team": "api"},
		"targets":      []map[string]any{{"id": "127.0.0.1"}},
	}, nil)
	p.mustAPI("PATCH", "/target-groups/api/attributes", map[string]any{"attributes": map[string]string{
		"deregistration_delay.timeout_seconds": "45",
		"load_balancing.algorithm.type":        "least_outstanding_requests",
		"stickiness.enabled":                   "true",
	}}, nil)
	p.mustAPI("PATCH", "/target-groups/api", map[string]any{"health_check": map[string]any{"healthy_threshold": 3}}, nil)
	p.mustAPI("POST", "/target-groups/api/targets", targets(e.port()), nil)
	p.mustAPI("POST", "/target-groups/web/targets/deregister", targets(c.port()), nil)

	var before, after struct {
		TargetGroups []map[string]any `json:"target_groups"`
	}
	p.mustAPI("GET", "/target-groups/", nil, &before)
	p.kill()

	p.start(p.config(opts))
	p.mustAPI("GET", "/target-groups/", nil, &after)
	if !reflect.DeepEqual(before, after) {
		bj, _ := json.MarshalIndent(before, "", " ")
		aj, _ := json.MarshalIndent(after, "", " ")
		t.Fatalf("after kill -9 and restart the groups differ:\nbefore %s\nafter  %s", bj, aj)
	}
	web, api := p.describe("web"), p.describe("api")
	if _, ok := web[c.port()]; ok || len(web) != 2 || len(api) != 2 {
		t.Fatalf("registrations after restart: web %v, api %v", web, api)
	}
	p.waitHealthy("web", a.port(), b.port())
	p.waitHealthy("api", d.port(), e.port())
	load := startLoad(t, "http://"+p.http+"/", 2, 5*time.Millisecond)
	time.Sleep(time.Second)
	load.expectNoFailures(t)
	if load.served["c"] != 0 || load.served["a"] == 0 || load.served["b"] == 0 {
		t.Fatalf("after restart web served %v", load.served)
	}
}

// BackendDeath: a backend dies (listener closed, connections cut) under
// load. With active checks only and the target_group handler's retries
// off, it is marked unhealthy within interval × unhealthy_threshold (plus
// the check timeout and the scheduler's ±10 % jitter) and its failed
// requests stop then; with the handler's default retries, the requests it
// refuses go to other targets and only those cut in flight fail (at most
// one per client); with passive health it is out at once; with
// reverse_proxy's lb_retries (which also sends a GET cut in flight again)
// and passive health, no request fails at all. The two cases with active
// checks, which wait the longest and have the loosest bound, run side by
// side once the others are done.
func testReliabilityBackendDeath(t *testing.T) {
	interval, threshold, timeout := 5*time.Second, 2, 2*time.Second
	bound := time.Duration(float64(interval)*1.1)*time.Duration(threshold) + timeout
	const workers = 8
	for _, tc := range []struct {
		name           string
		passive        int
		handlerRetries int
		retries        int
		within         time.Duration
		failures       int64 // at most; -1: not bounded (active checks only)
	}{
		{"ActiveChecks", 0, -1, 0, bound, -1},
		{"ActiveChecksAndHandlerRetries", 0, 0, 0, bound, workers},
		{"PassiveHealth", 2, 0, 0, time.Second, workers},
		{"PassiveHealthAndRetries", 2, 0, 2, time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.passive == 0 {
				t.Parallel()
			}
			p := newCaddyProc(t)
			hc := relHealthCheck(nil)
			if tc.passive > 0 {
				hc["passive_unhealthy_threshold"] = tc.passive
			}
			p.start(p.config(relOptions{healthCheck: hc, retries: tc.retries, handlerRetries: tc.handlerRetries}))
			a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
			p.mustAPI("POST", "/target-groups/web/targets", targets(a.port(), b.port(), c.port()), nil)
			p.waitHealthy("web", a.port(), b.port(), c.port())
			load := startLoad(t, "http://"+p.http+"/", workers, time.Millisecond)
			time.Sleep(500 * time.Millisecond)

			killed := time.Now()
			killBackend(c)
			var out time.Duration
			waitFor(t, "the dead backend marked unhealthy", bound+5*time.Second, func() bool {
				if p.describe("web")[c.port()].state == "unhealthy" {
					out = time.Since(killed)
					return true
				}
				return false
			})
			// Then a further second of load: nothing else may fail.
			failedAtOut := load.failed.Load()
			time.Sleep(time.Second)
			load.finish()
			last := load.lastFailure()
			t.Logf("dead backend unhealthy after %s (bound %s); %s", out.Round(time.Millisecond), tc.within, load.report(t))
			if out > tc.within {
				t.Errorf("marked unhealthy after %s, want within %s", out, tc.within)
			}
			// Requests already sent to the dead target when it was marked
			// may still fail: at most one per client.
			if n := load.failed.Load(); n-failedAtOut > workers {
				t.Errorf("%d requests failed after the backend was marked unhealthy (at most %d were in flight)", n-failedAtOut, workers)
			}
			if !last.IsZero() && last.Sub(killed) > tc.within {
				t.Errorf("requests failed until %s after the death, want within %s", last.Sub(killed), tc.within)
			}
			if tc.failures >= 0 && load.failed.Load() > tc.failures {
				t.Errorf("%d requests failed, want at most %d", load.failed.Load(), tc.failures)
			}
			if load.ok.Load() == 0 {
				t.Error("no request succeeded")
			}
		})
	}
}
