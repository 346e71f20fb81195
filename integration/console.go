package integration

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(new(Console))
}

// Console is the `http.handlers.target_groups_console` module: a web page
// for operators that shows every target group of this Caddy — its
// settings, its health and failover flags, and each target's state,
// reason, description, requests in flight, zone, weight and slow start —
// updated live, with a form to register targets and a button to
// deregister each one.
//
// It has no access control of its own: mount it in a site of yours behind
// your own authentication (basic_auth, forward_auth, a remote_ip matcher,
// a loopback-only listener), at any path. Everything the page loads is
// relative to where it is mounted:
//
//   - `<path>/`: the page (a request for `<path>` is redirected there);
//   - `<path>/console.js`, `<path>/console.css`: its script and style,
//     embedded in Caddy (the page fetches nothing from anywhere else);
//   - `<path>/api/state`: GET, every group with its settings, health and
//     targets, as JSON;
//   - `<path>/api/events`: GET, the same as Server-Sent Events, an event
//     `state` whenever something changes (checked twice a second); a
//     stream ends when the config is reloaded, and the browser
//     reconnects to the new one;
//   - `<path>/api/register` and `<path>/api/deregister`: POST
//     `{"group": "web", "targets": [{"id": "10.0.0.5", "port": 8080}]}`,
//     the same registry calls as the admin API's RegisterTargets and
//     DeregisterTargets, answered with the admin API's error codes.
//
// Writes are refused with 403 when the console is read_only, and when the
// request is cross-site: a browser must say it comes from the page's own
// origin (Sec-Fetch-Site or Origin), and every write must carry the
// header `X-Target-Groups-Console`, which a page of another site cannot
// send without the CORS permission the console never grants. Scripts may
// call the write endpoints with that header.
type Console struct {
	// Shows the page without its register form and deregister buttons,
	// and refuses every write with 403: for people who may look but not
	// change anything.
	ReadOnly bool `json:"read_only,omitempty"`

	logger *zap.Logger
	// done is the config's context: it is closed when the config that
	// provisioned this handler is unloaded.
	done <-chan struct{}
	// stopping is closed when the HTTP server begins to shut down (a
	// reload or an exit), before it waits for requests to finish: event
	// streams end then, so that they never hold the shutdown.
	stopping chan struct{}
	stopOnce sync.Once
	xorigin  *http.CrossOriginProtection

	mu sync.Mutex
	// wake is closed (and replaced) by a write, so that the event streams
	// send its effect at once.
	wake chan struct{}
	// cached is the state's JSON of cachedAt, shared by the streams.
	cached   []byte
	cachedAt time.Time
}

// CaddyModule returns the Caddy module information.
func (*Console) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.target_groups_console",
		New: func() caddy.Module { return new(Console) },
	}
}

// Provision ties the console's event streams to the config's lifetime and
// to its server's shutdown. The console reads the live registry on every
// request, so it needs no target_groups app of its own: with none running
// the page says so.
func (c *Console) Provision(ctx caddy.Context) error {
	c.logger = ctx.Logger()
	c.done = ctx.Done()
	c.stopping = make(chan struct{})
	c.wake = make(chan struct{})
	c.xorigin = http.NewCrossOriginProtection()
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		srv.RegisterOnShutdown(c.stop)
	}
	return nil
}

// stop ends the event streams.
func (c *Console) stop() { c.stopOnce.Do(func() { close(c.stopping) }) }

//go:embed console
var consoleFiles embed.FS

// consoleAssets are the files the page loads, by name.
var consoleAssets = map[string]string{
	"index.html":  "text/html; charset=utf-8",
	"console.js":  "text/javascript; charset=utf-8",
	"console.css": "text/css; charset=utf-8",
}

// ServeHTTP serves the page, its assets and its API. The console ends the
// chain: it never calls next.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	dir, name := path.Split(r.URL.Path)
	if strings.HasSuffix(dir, "/api/") {
		c.serveAPI(w, r, name)
		return nil
	}
	if typ, ok := consoleAssets[name]; ok {
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		serveAsset(w, r, name, typ)
		return nil
	}
	// Anything else is the page, which must be addressed with a trailing
	// slash for its relative URLs to resolve under the mount path. The
	// path the client asked for decides, before any handle_path or
	// uri strip_prefix rewrote it.
	orig := r.URL
	if or, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && or.URL != nil {
		orig = or.URL
	}
	if p := orig.EscapedPath(); !strings.HasSuffix(p, "/") {
		loc := "./" + path.Base(p) + "/"
		if orig.RawQuery != "" {
			loc += "?" + orig.RawQuery
		}
		h.Set("Location", loc)
		w.WriteHeader(http.StatusFound)
		return nil
	}
	if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
		return nil
	}
	serveAsset(w, r, "index.html", "text/html; charset=utf-8")
	return nil
}

// serveAPI answers a request under <path>/api/.
func (c *Console) serveAPI(w http.ResponseWriter, r *http.Request, name string) {
	w.Header().Set("Cache-Control", "no-store")
	switch name {
	case "state":
		if allowMethods(w, r, http.MethodGet, http.MethodHead) {
			c.serveState(w, r)
		}
	case "events":
		if allowMethods(w, r, http.MethodGet) {
			c.serveEvents(w, r)
		}
	case "register", "deregister":
		if allowMethods(w, r, http.MethodPost) {
			c.serveWrite(w, r, name)
		}
	default:
		writeConsoleError(w, http.StatusNotFound, "ResourceNotFoundException", "no such console endpoint: "+url.PathEscape(name))
	}
}

// allowMethods answers 405 to a request whose method is not one of
// methods, and reports whether the method is allowed.
func allowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeConsoleError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method+" is not allowed here; allowed: "+strings.Join(methods, ", "))
	return false
}

// serveAsset serves one embedded file. Browsers revalidate it on every
// load (no-cache), so that a Caddy upgrade shows its page at once.
func serveAsset(w http.ResponseWriter, r *http.Request, name, typ string) {
	data, err := consoleFiles.ReadFile("console/" + name)
	if err != nil {
		http.Error(w, "console asset missing", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", typ)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", assetETags[name])
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
}

// assetETags are the embedded files' ETags, by name.
var assetETags = func() map[string]string {
	m := map[string]string{}
	entries, _ := consoleFiles.ReadDir("console")
	for _, e := range entries {
		data, _ := consoleFiles.ReadFile("console/" + e.Name())
		sum := sha256.Sum256(data)
		m[e.Name()] = `"` + hex.EncodeToString(sum[:8]) + `"`
	}
	return m
}()

// UnmarshalCaddyfile sets up the console from Caddyfile tokens:
//
//	target_groups_console [read_only]
func (c *Console) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		if d.Val() != "read_only" {
			return d.Errf("target_groups_console: unrecognized argument '%s' (allowed: read_only)", d.Val())
		}
		c.ReadOnly = true
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("target_groups_console: takes no block; its only option is the argument read_only")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Console)(nil)
	_ caddyhttp.MiddlewareHandler = (*Console)(nil)
	_ caddyfile.Unmarshaler       = (*Console)(nil)
)
