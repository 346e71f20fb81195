package integration_test

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// consoleShots, when set, is where TestConsoleBrowser writes its
// screenshots; the README's are made with
//
//	go test ./integration -run TestConsoleBrowser -console-screenshots ../docs
var consoleShots = flag.String("console-screenshots", "", "write the console's screenshots (console-healthy.png, console-draining.png, console-failover.png, console-phone.png) to this directory")

// chromiumPath finds a Chromium or Chrome to drive: $CHROMIUM, or one on
// the PATH (Debian's chromium package installs /usr/bin/chromium).
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browserTab starts a headless Chromium and returns a tab of it, closed
// when the test ends.
func browserTab(t *testing.T, bin string, timeout time.Duration) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(ctx)
	t.Cleanup(cancelTab)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	return ctx
}

// pageWait evaluates the JavaScript expression js in the page until it
// is true.
func pageWait(t *testing.T, ctx context.Context, timeout time.Duration, what, js string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page did not show %s within %s (last error: %v)", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rowJS is JavaScript for the row of a target of a group.
func rowJS(group, key string) string {
	return fmt.Sprintf("document.querySelector('section[data-group=%q] tr[data-target=%q]')", group, key)
}

// pageText is the text of the first element sel selects ("" if none).
func pageText(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf("(e => e ? e.textContent : '')(document.querySelector(%q))", sel)))
	if err != nil {
		t.Fatalf("reading %s: %v", sel, err)
	}
	return s
}

// shot writes a PNG screenshot of the element sel (the viewport when sel
// is "") as name, into -console-screenshots or the test's own directory.
func shot(t *testing.T, ctx context.Context, name, sel string) {
	t.Helper()
	var png []byte
	var err error
	if sel == "" {
		png, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
	} else {
		png, err = chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(sel), chromedp.NodeVisible))
	}
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot %s is not a PNG", name)
	}
	dir := *consoleShots
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// slowBackend is a target whose requests wait for their ?sleep= duration,
// and whose health checks pass, once gate is closed if it has one.
type slowBackend struct {
	srv  *httptest.Server
	gate chan struct{}
}

func newSlowBackend(t *testing.T, gated bool) *slowBackend {
	b := &slowBackend{}
	if gated {
		b.gate = make(chan struct{})
	}
	stop := make(chan struct{})
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wait := b.gate
		if !strings.HasPrefix(r.UserAgent(), "Caddy-TargetGroup-HealthChecker") {
			d, _ := time.ParseDuration(r.URL.Query().Get("sleep"))
			wait = make(chan struct{})
			time.AfterFunc(d, func() { close(wait) })
		}
		if wait != nil {
			select {
			case <-wait:
			case <-r.Context().Done():
			case <-stop:
			}
		}
		fmt.Fprint(w, "ok")
	}))
	// Cleanups run last first: held requests go, then the server closes.
	t.Cleanup(b.srv.Close)
	t.Cleanup(func() { close(stop) })
	return b
}

func (b *slowBackend) port() int { return b.srv.Listener.Addr().(*net.TCPAddr).Port }

func (b *slowBackend) key() string { return hcKey(b.port()) }

// TestConsoleBrowser drives the console in headless Chromium against an
// in-process Caddy. The page, opened at the path the site mounts it (the
// bare path redirects to it with a slash), shows without being reloaded
// and within 2 s of each change: a target registered through the admin
// API initial, then healthy; a target registered from its form (zone,
// weight, slow start); requests in flight; a target deregistered from its
// row draining; a group whose targets fail in routing failover; the
// group's settings. The writes from the page take effect in the registry;
// writes from a page of another site are refused; on a phone's width
// nothing is wider than the screen; and after a config reload the page's
// stream reconnects by itself and goes on showing changes.
func TestConsoleBrowser(t *testing.T) {
	bin := chromiumPath()
	if bin == "" {
		t.Skip("no Chromium to drive: install Debian's chromium (apt-get install chromium; .ci/run does) or set CHROMIUM to a Chrome binary")
	}
	a := newSlowBackend(t, true) // its first check waits: the page shows it initial
	b := newSlowBackend(t, false)
	d1, d2 := newHCBackend(t, "d1", hc500), newHCBackend(t, "d2", hc500)
	hc := `"health_check": {` + hcFast + `, "path": "/health"}`
	cfg := caddyConfig{
		groups: map[string]any{
			"web":  `{` + hc + `, "attributes": {"load_balancing.algorithm.type": "weighted_random", "slow_start.duration_seconds": "30"}}`,
			"down": `{` + hc + `}`,
		},
		routes: []any{route("/ops*", map[string]any{"handler": "target_groups_console"}), route("", tgHandler("web"))},
	}.json()
	in := startCaddy(t, cfg)
	// down's targets fail from their first check: two rounds of checks
	// (about 6 s) from now, the group is in routing failover.
	in.register("down", d1.port(), d2.port())

	ctx := browserTab(t, bin, 25*time.Second)
	base := "http://" + in.http + "/ops/"
	// /ops redirects to /ops/, where the page's relative URLs resolve.
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+in.http+"/ops"), chromedp.WaitVisible(chromedp.CSS(`section[data-group="web"]`))); err != nil {
		t.Fatalf("opening the console: %v", err)
	}
	if u, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`)); u != base {
		t.Errorf("the page is at %s, want %s", u, base)
	}
	pageWait(t, ctx, 2*time.Second, "a live stream", `document.getElementById("status").dataset.status === "live"`)
	// A page reload would lose this.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.noReload = true`)); err != nil {
		t.Fatal(err)
	}
	state := func(group, key string) string { return rowJS(group, key) + "?.dataset.state" }

	// A target registered through the admin API shows up initial, and
	// healthy once its check passes.
	in.register("web", a.port())
	pageWait(t, ctx, 2*time.Second, "a initial", state("web", a.key())+` === "initial"`)
	close(a.gate)
	start := time.Now()
	in.waitStates("web", map[string]string{a.key(): "healthy"})
	pageWait(t, ctx, 2*time.Second, "a healthy", state("web", a.key())+` === "healthy"`)
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("a turned healthy on the page %s after its check was let through", d)
	}

	// A target registered from the page's form.
	form := `section[data-group="web"] form.register `
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS(form+`input[name="id"]`), "127.0.0.1"),
		chromedp.SendKeys(chromedp.CSS(form+`input[name="port"]`), strconv.Itoa(b.port())),
		chromedp.SendKeys(chromedp.CSS(form+`input[name="availability_zone"]`), "zone-b"),
		chromedp.SendKeys(chromedp.CSS(form+`input[name="weight"]`), "2"),
		chromedp.Click(chromedp.CSS(form+`button[type="submit"]`)),
	); err != nil {
		t.Fatalf("filling in the register form: %v", err)
	}
	waitFor(t, "b registered from the page", 2*time.Second, func() bool { return in.states("web")[b.key()] != "" })
	for _, e := range in.health("web").Targets {
		if e.Target.Port == b.port() && e.Target.AZ != "zone-b" {
			t.Errorf("b registered from the page with zone %q, want zone-b", e.Target.AZ)
		}
	}
	pageWait(t, ctx, 5*time.Second, "b healthy", state("web", b.key())+` === "healthy"`)
	// b became healthy beside a healthy a: it is in slow start.
	if txt := pageText(t, ctx, `section[data-group="web"] tr[data-target="`+b.key()+`"] .col-slowstart`); !strings.HasSuffix(txt, "s left") {
		t.Errorf("b's slow start on the page: %q, want the seconds left", txt)
	}
	if txt := pageText(t, ctx, `section[data-group="web"] tr[data-target="`+b.key()+`"] .col-weight`); txt != "2" {
		t.Errorf("b's weight on the page: %q", txt)
	}
	if txt := pageText(t, ctx, `section[data-group="web"] .badges`); !strings.Contains(txt, "2/2 healthy") {
		t.Errorf("web's badges: %q, want 2/2 healthy", txt)
	}
	// Requests in flight, to each target.
	var slow sync.WaitGroup
	defer slow.Wait()
	for range 4 {
		slow.Go(func() {
			if resp, err := http.Get("http://" + in.http + "/?sleep=3s"); err == nil {
				resp.Body.Close()
			}
		})
	}
	pageWait(t, ctx, 2*time.Second, "4 requests in flight", `[...document.querySelectorAll('section[data-group="web"] td.col-inflight')].reduce((n, td) => n + Number(td.textContent), 0) === 4`)

	// The group's settings, behind their disclosure.
	settings := `section[data-group="web"] details.settings-box`
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(settings+` summary`))); err != nil {
		t.Fatal(err)
	}
	if txt := pageText(t, ctx, settings+` dl`); !strings.Contains(txt, "Health check") || !strings.Contains(txt, "every 5s") || !strings.Contains(txt, "slow_start.duration_seconds30") {
		t.Errorf("web's settings on the page: %q", txt)
	}
	shot(t, ctx, "console-healthy.png", `section[data-group="web"]`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(settings+` summary`))); err != nil {
		t.Fatal(err)
	}

	// Writes from a page of another site are refused, whatever they try:
	// a simple POST (no preflight) and one with the console's header
	// (which needs CORS permission the console never gives).
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "<!doctype html><title>another site</title>")
	}))
	t.Cleanup(evil.Close)
	evilTab, closeEvil := chromedp.NewContext(ctx)
	evilURL := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1) + "/"
	body := fmt.Sprintf(`JSON.stringify({group: "web", targets: [{id: "127.0.0.1", port: %d}]})`, b.port())
	if err := chromedp.Do(evilTab, chromedp.Navigate(evilURL)); err != nil {
		t.Fatalf("opening the other site: %v", err)
	}
	js := fmt.Sprintf(`window.tries = [];
		fetch(%[1]q, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: %[2]s}).then(() => tries.push("sent"), e => tries.push("error"));
		fetch(%[1]q, {method: "POST", headers: {"Content-Type": "application/json", "X-Target-Groups-Console": "1"}, body: %[2]s}).then(r => tries.push("answered " + r.status), e => tries.push("refused"));
		true`, base+"api/deregister", body)
	if _, err := chromedp.Run(evilTab, chromedp.Evaluate[bool](js)); err != nil {
		t.Fatal(err)
	}
	pageWait(t, evilTab, 3*time.Second, "both cross-site writes done", `window.tries.length === 2`)
	closeEvil()
	if st := in.states("web")[b.key()]; st != "healthy" {
		t.Fatalf("after writes from another site, b is %s, want healthy", st)
	}

	// A target deregistered from its row drains.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`section[data-group="web"] tr[data-target="`+a.key()+`"] button.deregister`))); err != nil {
		t.Fatalf("clicking Deregister: %v", err)
	}
	waitFor(t, "a draining in the registry", 2*time.Second, func() bool { return in.states("web")[a.key()] == "draining" })
	pageWait(t, ctx, 2*time.Second, "a draining", state("web", a.key())+` === "draining"`)
	if txt := pageText(t, ctx, `section[data-group="web"] tr[data-target="`+a.key()+`"] .col-reason`); txt != "Target.DeregistrationInProgress" {
		t.Errorf("a's reason on the page: %q", txt)
	}
	if txt := pageText(t, ctx, `section[data-group="web"] .message`); !strings.Contains(txt, "Deregistered "+a.key()) {
		t.Errorf("the page's answer to Deregister: %q", txt)
	}
	shot(t, ctx, "console-draining.png", `section[data-group="web"]`)

	// The failing group: routing failover, on the page without a reload.
	pageWait(t, ctx, 12*time.Second, "down in routing failover, both targets unhealthy", `document.querySelector('section[data-group="down"]').dataset.routingFailover === "true" &&
		document.querySelectorAll('section[data-group="down"] tr[data-state="unhealthy"]').length === 2`)
	if txt := pageText(t, ctx, `section[data-group="down"] .badges`); !strings.Contains(txt, "routing failover") || !strings.Contains(txt, "0/2 healthy") {
		t.Errorf("down's badges: %q", txt)
	}
	shot(t, ctx, "console-failover.png", "")

	// On a phone: no sideways scrolling, targets as cards.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844)); err != nil {
		t.Fatal(err)
	}
	pageWait(t, ctx, 2*time.Second, "a layout that fits a phone's width",
		`document.documentElement.scrollWidth <= window.innerWidth && getComputedStyle(document.querySelector("table.targets thead")).display === "none"`)
	shot(t, ctx, "console-phone.png", `section[data-group="web"]`)

	// A config reload ends the page's stream; the page reconnects to the
	// new config by itself and goes on showing changes.
	conns, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.connections`))
	if err != nil || conns != "1" {
		t.Fatalf("the page opened its stream %q times before the reload (%v), want once", conns, err)
	}
	if err := in.load(cfg); err != nil {
		t.Fatalf("reloading the config: %v", err)
	}
	pageWait(t, ctx, 3*time.Second, "the page's stream reconnected after a config reload", `document.body.dataset.connections === "2" && document.getElementById("status").dataset.status === "live"`)
	in.mustAPI("POST", "/target-groups/web/targets/deregister", targets(b.port()), nil)
	pageWait(t, ctx, 2*time.Second, "b draining after the reload", state("web", b.key())+` === "draining"`)

	if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.noReload === true`)); err != nil || !ok {
		t.Errorf("the page was reloaded (%v)", err)
	}
}
