package fleet_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The fixture of the package: a redis-server of the test's own (with, for
// the storage-down-at-start test, a gate in front of it), N Caddy processes
// sharing it through caddy-storage-redis, backends, an admin API client,
// polling, and a load generator. newFleet builds one fleet per test;
// everything it starts is stopped in t.Cleanup.

// longForm is FLEET_LONG=1: more changes and rounds.
func longForm() bool { return os.Getenv("FLEET_LONG") == "1" }

// pick is short or long by the form.
func pick(short, long int) int {
	if longForm() {
		return long
	}
	return short
}

// storageModule is caddy-storage-redis's module, which the binary must have.
const storageModule = "caddy.storage.redis"

var tools struct {
	once    sync.Once
	bin     string
	skip    string // why the suite can't run here
	err     error  // the binary is unfit
	printed sync.Once
}

// requireTools returns the Caddy binary, or skips the test (saying why, on
// stderr too, once, since go test shows skips only with -v) when
// CADDY_BINARY or redis-server is missing. A binary without the Redis
// storage module fails the test: CADDY_BINARY is then set up wrong.
func requireTools(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("the fleet suite runs Caddy processes and redis-server; skipped with -short")
	}
	tools.once.Do(func() {
		tools.bin = os.Getenv("CADDY_BINARY")
		if tools.bin == "" {
			tools.skip = "CADDY_BINARY is not set. The fleet suite needs a Caddy built with the plugin and " +
				"github.com/pberkel/caddy-storage-redis@v1.8.1: make test builds one (bin/caddy-race); by hand, " +
				"CADDY_WITH=github.com/pberkel/caddy-storage-redis@v1.8.1 CADDY_OUTPUT=<file> scripts/build-caddy.sh, then CADDY_BINARY=<file>"
			return
		}
		if _, err := exec.LookPath("redis-server"); err != nil {
			tools.skip = "redis-server is not on PATH (Debian: apt-get install redis-server; .ci/run installs it)"
			return
		}
		out, err := exec.Command(tools.bin, "list-modules").CombinedOutput()
		if err != nil {
			tools.err = fmt.Errorf("CADDY_BINARY=%s list-modules: %v\n%s", tools.bin, err, out)
			return
		}
		if !slices.Contains(strings.Fields(string(out)), storageModule) {
			tools.err = fmt.Errorf("CADDY_BINARY=%s has no %s module: build it with CADDY_WITH=github.com/pberkel/caddy-storage-redis@v1.8.1 scripts/build-caddy.sh", tools.bin, storageModule)
		}
	})
	if tools.skip != "" {
		tools.printed.Do(func() { fmt.Fprintf(os.Stderr, "fleet suite skipped: %s\n", tools.skip) })
		t.Skip("fleet suite skipped: " + tools.skip)
	}
	if tools.err != nil {
		t.Fatal(tools.err)
	}
	return tools.bin
}

// Ports.

var ports struct {
	sync.Mutex
	used map[int]bool
}

// processPort returns a loopback port for a process of the suite (Redis,
// a node's admin endpoint and HTTP listener), never the same twice in this
// test binary. The processes are killed and started again on their ports,
// so the port comes from below the kernel's ephemeral range: an outgoing
// connection or another test's listener on port 0 can't take it meanwhile.
func processPort(t *testing.T) int {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				lo = n
			}
		}
	}
	const base = 10000
	ports.Lock()
	defer ports.Unlock()
	if ports.used == nil {
		ports.used = map[int]bool{}
	}
	for range 200 {
		p := 0
		if lo > base+1000 {
			p = base + rand.IntN(lo-base)
		} else { // an unusual range: take one from it
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			p = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}
		if ports.used[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		ports.used[p] = true
		return p
	}
	t.Fatal("found no free loopback port")
	return 0
}

// Backends.

// backend is an HTTP server on loopback answering its name, and 200 on
// /health (the groups' health check path); it counts the other requests.
type backend struct {
	name string
	srv  *httptest.Server
	hits atomic.Int64
}

func newBackend(t *testing.T, name string) *backend {
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			fmt.Fprint(w, "ok")
			return
		}
		b.hits.Add(1)
		fmt.Fprint(w, b.name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func newBackends(t *testing.T, prefix string, n int) []*backend {
	bs := make([]*backend, n)
	for i := range bs {
		bs[i] = newBackend(t, fmt.Sprintf("%s%d", prefix, i))
	}
	return bs
}

func (b *backend) port() int { return b.srv.Listener.Addr().(*net.TCPAddr).Port }

func portsOf(bs ...*backend) []int {
	out := make([]int, len(bs))
	for i, b := range bs {
		out[i] = b.port()
	}
	return out
}

// Fleet config.

// healthCheck is every group's health check: /health every 5 s (the AWS
// minimum), thresholds of 2.
func healthCheck() map[string]any {
	return map[string]any{"path": "/health", "interval": "5s", "timeout": "2s", "healthy_threshold": 2, "unhealthy_threshold": 2}
}

// webGroup is the config group "web", which each node's HTTP server
// routes every request to, with the given attributes beside a short
// deregistration delay.
func webGroup(attrs map[string]string) map[string]any {
	a := map[string]string{"deregistration_delay.timeout_seconds": "2"}
	for k, v := range attrs {
		a[k] = v
	}
	return map[string]any{"protocol": "HTTP", "port": 80, "health_check": healthCheck(), "attributes": a}
}

// fleetOptions shape a fleet.
type fleetOptions struct {
	nodes int // default 3
	// web is the config group "web" (default webGroup(nil)).
	web map[string]any
	// redisDown leaves Redis stopped: the test starts it (f.redis.start).
	redisDown bool
	// noStart leaves the nodes stopped: the test starts them.
	noStart bool
	// gate puts a redisGate, closed, between the nodes and Redis: the
	// test opens it (f.gate.open).
	gate bool
	// single leaves node_id and sync_interval out of the app, for a node
	// on Redis as one Caddy is configured without a fleet.
	single bool
}

// fleet is one test's Redis and Caddy nodes.
type fleet struct {
	t     *testing.T
	bin   string
	redis *redisServer
	gate  *redisGate // with fleetOptions.gate
	nodes []*node
	opts  fleetOptions
	// started is when the last startAll returned.
	started time.Time
}

// age says how long ago the fleet's nodes were started, for messages: a
// slow change early in a fleet's life points at how nodes find each other.
func (f *fleet) age(at time.Time) string {
	return fmt.Sprintf("%s after the nodes were started together", at.Sub(f.started).Round(time.Millisecond))
}

// newFleet builds a fleet: a Redis of its own (started unless redisDown)
// and the nodes node-1 … node-N (started at the same moment, as a deploy
// does, unless noStart).
func newFleet(t *testing.T, o fleetOptions) *fleet {
	t.Helper()
	bin := requireTools(t)
	if o.nodes == 0 {
		o.nodes = 3
	}
	if o.web == nil {
		o.web = webGroup(nil)
	}
	f := &fleet{t: t, bin: bin, opts: o}
	if o.redisDown {
		f.redis = newRedis(t)
	} else {
		f.redis = startRedis(t)
	}
	if o.gate {
		f.gate = newRedisGate(t, f.redis.addr())
	}
	for i := range o.nodes {
		f.nodes = append(f.nodes, f.newNode(fmt.Sprintf("node-%d", i+1)))
	}
	if !o.noStart {
		f.startAll(f.nodes...)
	}
	return f
}

// startAll starts the nodes at once and waits for all their admin
// endpoints.
func (f *fleet) startAll(nodes ...*node) {
	f.t.Helper()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { errs[i] = n.tryStart() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		f.t.Fatal(err)
	}
	f.started = time.Now()
}

// config is a node's JSON config: its admin endpoint, the shared Redis
// storage, the target_groups app with the node's id and the group "web",
// and one HTTP server routing every request to "web".
//
// The storage is caddy-storage-redis v1.8.1's JSON: module "redis",
// address, and the defaults for the rest (key_prefix "caddy", db 0,
// timeout 5 s). That version has no skip_connection_check option (it pings
// Redis while provisioning) and Caddy decodes module configs strictly, so
// the option is not set: a config with it does not load.
func (f *fleet) config(n *node) []byte {
	app := map[string]any{"groups": map[string]any{"web": f.opts.web}}
	if !f.opts.single {
		app["node_id"] = n.id
		app["sync_interval"] = "250ms"
	}
	cfg := map[string]any{
		"admin": map[string]any{"listen": n.admin},
		// The admin endpoint logs every request it serves, and the tests
		// poll it every 10 ms: left out, so that the log shows the rest.
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"exclude": []string{"admin.api"}}}},
		"storage": map[string]any{"module": "redis", "address": []string{f.storageAddr()}},
		"apps": map[string]any{
			"target_groups": app,
			"http": map[string]any{"servers": map[string]any{"s": map[string]any{
				"listen":          []string{n.http},
				"automatic_https": map[string]any{"disable": true},
				"routes":          []any{map[string]any{"handle": []any{map[string]any{"handler": "target_group", "group": "web"}}}},
				// Errors carry their reason, so that a failed request
				// says why.
				"errors": map[string]any{"routes": []any{map[string]any{"handle": []any{map[string]any{
					"handler": "static_response", "status_code": "{http.error.status_code}",
					"body": "{http.error.status_code} {http.error.message}",
				}}}}},
			}}},
		},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// storageAddr is the Redis address of the nodes' config: Redis's, or the
// gate's in front of it.
func (f *fleet) storageAddr() string {
	if f.gate != nil {
		return f.gate.addr()
	}
	return f.redis.addr()
}

// Nodes.

// node is one Caddy process of the fleet with its own directory (config,
// HOME and XDG directories, log), admin endpoint and HTTP listener. Killed
// and started again it keeps all of them, its node_id included.
type node struct {
	t      *testing.T
	f      *fleet
	id     string
	dir    string
	admin  string
	http   string
	client *http.Client

	mu     sync.Mutex
	cmd    *exec.Cmd
	exit   chan struct{}
	paused bool
}

func (f *fleet) newNode(id string) *node {
	n := &node{t: f.t, f: f, id: id, dir: f.t.TempDir(),
		admin: fmt.Sprintf("127.0.0.1:%d", processPort(f.t)), http: fmt.Sprintf("127.0.0.1:%d", processPort(f.t)),
		client: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}}
	f.t.Cleanup(func() {
		n.kill()
		// The race-detector Caddy reports races in its log and goes on.
		if strings.Contains(tail(n.logPath(), 0), "WARNING: DATA RACE") {
			f.t.Errorf("%s reported a DATA RACE (its log follows)", n.id)
			f.t.Logf("%s log:\n%s", n.id, tail(n.logPath(), 60000))
		} else if f.t.Failed() {
			if log := tail(n.logPath(), 20000); log != "" {
				f.t.Logf("%s log (tail):\n%s", n.id, log)
			}
		}
	})
	return n
}

func (n *node) logPath() string { return filepath.Join(n.dir, "caddy.log") }

// start starts the node and waits for its admin endpoint.
func (n *node) start() {
	n.t.Helper()
	if err := n.tryStart(); err != nil {
		n.t.Fatal(err)
	}
}

// tryStart starts the node and waits for its admin endpoint; the error
// says why it did not come up, with the end of its log. Safe to call from
// any goroutine.
func (n *node) tryStart() error {
	file := filepath.Join(n.dir, "caddy.json")
	if err := os.WriteFile(file, n.f.config(n), 0o600); err != nil {
		return err
	}
	home := filepath.Join(n.dir, "home")
	log, err := os.OpenFile(n.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	fmt.Fprintf(log, "---- test: starting %s at %s\n", n.id, time.Now().Format("15:04:05.000"))
	cmd := exec.Command(n.f.bin, "run", "--config", file)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+filepath.Join(home, "data"), "XDG_CONFIG_HOME="+filepath.Join(home, "config"))
	cmd.Stdout, cmd.Stderr = log, log
	n.mu.Lock()
	if n.cmd != nil {
		n.mu.Unlock()
		return fmt.Errorf("%s is already running", n.id)
	}
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		return fmt.Errorf("starting %s: %v", n.id, err)
	}
	exit := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exit) }()
	n.cmd, n.exit, n.paused = cmd, exit, false
	n.mu.Unlock()

	const timeout = 30 * time.Second
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-exit:
			n.mu.Lock()
			n.cmd = nil
			n.mu.Unlock()
			return fmt.Errorf("%s exited before its admin endpoint answered%s\n%s log (tail):\n%s", n.id, diagnose(n.logPath()), n.id, tail(n.logPath(), 6000))
		default:
		}
		if code, _, err := n.call("GET", "/config/", nil); err == nil && code == 200 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: the admin endpoint %s did not answer within %s\n%s log (tail):\n%s", n.id, n.admin, timeout, n.id, tail(n.logPath(), 6000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// diagnose names the likely cause of a node's failed start from its log.
func diagnose(logPath string) string {
	log := tail(logPath, 0)
	switch {
	case strings.Contains(log, `unknown field "node_id"`), strings.Contains(log, `unknown field "sync_interval"`):
		return ": the target_groups app does not know node_id / sync_interval (the fleet feature is missing from this binary)"
	case strings.Contains(log, `unknown field "skip_connection_check"`):
		return ": the storage module has no skip_connection_check option"
	case strings.Contains(log, "loading storage module") && strings.Contains(log, "connection refused"):
		return ": Caddy could not provision its storage with Redis down (caddy-storage-redis v1.8.1 pings Redis while provisioning and has no option to skip that)"
	case strings.Contains(log, "loading storage module"):
		return ": Caddy could not provision the Redis storage"
	case strings.Contains(log, "address already in use"):
		return ": a port of the node was taken"
	}
	return ""
}

// kill ends the node with SIGKILL, as a crash would.
func (n *node) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exit
	n.cmd, n.paused = nil, false
	n.client.Transport.(*http.Transport).CloseIdleConnections()
}

// pause stops the node with SIGSTOP: it answers nothing until resume.
func (n *node) pause() {
	n.t.Helper()
	n.signal(syscall.SIGSTOP)
	n.mu.Lock()
	n.paused = true
	n.mu.Unlock()
}

// resume continues a paused node with SIGCONT.
func (n *node) resume() {
	n.t.Helper()
	n.signal(syscall.SIGCONT)
	n.mu.Lock()
	n.paused = false
	n.mu.Unlock()
}

func (n *node) signal(s syscall.Signal) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		n.t.Fatalf("%s is not running", n.id)
	}
	if err := n.cmd.Process.Signal(s); err != nil {
		n.t.Fatalf("%s: %v: %v", n.id, s, err)
	}
}

// tail returns the last max bytes of a file (all of it for max 0).
func tail(path string, max int) string {
	b, _ := os.ReadFile(path)
	if max > 0 && len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// Load.

// loadGen keeps a steady load on the HTTP listeners of some nodes, each
// from workers clients of their own with keep-alive connections, and
// records every request that is not answered with a 2xx as failed
// (transport errors included: no reload happens in these scenarios, so no
// request is tried again).
type loadGen struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	ok      atomic.Int64
	failed  atomic.Int64
	mu      sync.Mutex
	samples []string
	perNode map[string]int64
	served  map[string]int64
}

func startLoad(t *testing.T, nodes []*node, workers int) *loadGen {
	l := &loadGen{stop: make(chan struct{}), perNode: map[string]int64{}, served: map[string]int64{}}
	for _, n := range nodes {
		for range workers {
			l.wg.Go(func() { l.worker(n) })
		}
	}
	t.Cleanup(l.finish)
	return l
}

func (l *loadGen) worker(n *node) {
	tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	served := map[string]int64{}
	var count int64
	defer func() {
		l.mu.Lock()
		l.perNode[n.id] += count
		for k, v := range served {
			l.served[k] += v
		}
		l.mu.Unlock()
	}()
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		count++
		resp, err := client.Get("http://" + n.http + "/")
		if err != nil {
			l.fail(n.id + ": transport error: " + err.Error())
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			l.fail(fmt.Sprintf("%s: status %d, reading the body: %v", n.id, resp.StatusCode, err))
		case resp.StatusCode < 200 || resp.StatusCode > 299:
			l.fail(fmt.Sprintf("%s: status %d: %.200s", n.id, resp.StatusCode, strings.TrimSpace(string(body))))
		default:
			l.ok.Add(1)
			served[string(body)]++
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (l *loadGen) fail(what string) {
	l.failed.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.samples) < 20 {
		l.samples = append(l.samples, time.Now().Format("15:04:05.000")+" "+what)
	}
}

// counts returns the requests answered and failed so far.
func (l *loadGen) counts() (ok, failed int64) { return l.ok.Load(), l.failed.Load() }

func (l *loadGen) finish() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *loadGen) report() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := fmt.Sprintf("%d requests, %d failed; by node %v; served by %v", l.ok.Load()+l.failed.Load(), l.failed.Load(), l.perNode, l.served)
	if len(l.samples) > 0 {
		s += "; first failures: " + strings.Join(l.samples, " | ")
	}
	return s
}

// expectNoFailures stops the load, logs its counts and fails the test if
// nothing was served or anything failed.
func (l *loadGen) expectNoFailures(t *testing.T) {
	t.Helper()
	l.finish()
	t.Log("load: " + l.report())
	if l.ok.Load() == 0 {
		t.Fatal("no request succeeded")
	}
	if n := l.failed.Load(); n != 0 {
		t.Fatalf("%d requests failed; the allowed number is 0", n)
	}
}

// get sends one request through the node's HTTP listener and returns the
// status and body.
func (n *node) get(client *http.Client, cookies ...*http.Cookie) (int, string, *http.Response) {
	n.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+n.http+"/", nil)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := client.Do(req)
	if err != nil {
		n.t.Fatalf("%s: GET /: %v", n.id, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}
