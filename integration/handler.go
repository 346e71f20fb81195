package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

func init() {
	caddy.RegisterModule(new(Handler))
}

// Handler is the `http.handlers.target_group` module: a reverse_proxy wired
// to one target group — the target_group upstream source and selection
// policy — with the transport the group's protocol asks for: HTTP/1.1, h2c
// for HTTP2 and GRPC, and for HTTPS groups TLS without certificate
// verification (as AWS load balancers do with their targets).
type Handler struct {
	// The target group to proxy to.
	Group string `json:"group,omitempty"`

	// How many other targets a request may try when a target can't be
	// reached (connection refused, dial timeout): nothing was sent, so a
	// retry is safe for every method. A request that reached a target is
	// never sent again. 1-10; 0 (or no field) means the default, 2 (three
	// targets in all); -1 turns retries off.
	Retries int `json:"retries,omitempty"`

	ctx     caddy.Context
	reg     *targetgroup.Registry
	mu      sync.Mutex
	proxies map[transportKey]*reverseproxy.Handler
	// last is the proxy the latest request used: the request path reads it
	// without a lock and builds (under mu) only when the protocol changed.
	last atomic.Pointer[builtProxy]
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.target_group",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision loads the target_groups app and, for a group the config
// declares, builds its proxy now so that config errors show at load.
func (h *Handler) Provision(ctx caddy.Context) error {
	if h.Group == "" {
		return errors.New("target_group handler: group is required")
	}
	if err := checkRetries("target_group handler", h.Retries); err != nil {
		return err
	}
	h.ctx = ctx
	h.proxies = make(map[transportKey]*reverseproxy.Handler)
	reg, err := registryOf(ctx, h.Group)
	if err != nil {
		return err
	}
	h.reg = reg
	appIface, _ := ctx.App("target_groups")
	if spec := appIface.(*targetgroup.App).DeclaredSpec(h.Group); spec != nil {
		if spec.Layer4() {
			return fmt.Errorf("target_group handler: group %q has protocol %s; use the layer4 target_group handler for it", h.Group, spec.Config.Protocol)
		}
		_, err := h.proxyFor(spec)
		return err
	}
	return nil
}

// transportKey is what decides a group's transport.
type transportKey struct{ protocol, version string }

type builtProxy struct {
	key transportKey
	rp  *reverseproxy.Handler
}

func keyOf(spec *targetgroup.Spec) transportKey {
	return transportKey{spec.Config.Protocol, spec.Config.ProtocolVersion}
}

// transport returns the reverse_proxy transport for a group's protocol.
func transport(k transportKey) json.RawMessage {
	t := map[string]any{"protocol": "http"}
	versions := []string{"1.1"}
	if k.version == targetgroup.VersionHTTP2 || k.version == targetgroup.VersionGRPC {
		versions = []string{"h2c"}
	}
	if k.protocol == targetgroup.ProtocolHTTPS {
		// AWS load balancers do not validate target certificates: targets
		// may use self-signed or expired ones.
		t["tls"] = map[string]any{"insecure_skip_verify": true}
		if versions[0] == "h2c" {
			versions = []string{"2"}
		}
	}
	t["versions"] = versions
	raw, _ := json.Marshal(t)
	return raw
}

// proxyFor returns the reverse_proxy for the group's current protocol,
// building it the first time; a group created or changed through the API
// later may need another transport.
func (h *Handler) proxyFor(spec *targetgroup.Spec) (*reverseproxy.Handler, error) {
	key := keyOf(spec)
	if b := h.last.Load(); b != nil && b.key == key {
		return b.rp, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	rp := h.proxies[key]
	if rp == nil {
		src := &UpstreamSource{Group: h.Group, reg: h.reg}
		lb := &reverseproxy.LoadBalancing{SelectionPolicy: &SelectionPolicy{Group: h.Group, reg: h.reg}}
		if retries := retriesOf(h.Retries); retries > 0 {
			lb.Retries = retries
			// reverse_proxy retries dial errors whatever the matchers say;
			// a matcher that never matches keeps it from sending a GET
			// that reached a target a second time.
			lb.RetryMatch = caddyhttp.MatcherSets{{neverMatch{}}}
		}
		rp = &reverseproxy.Handler{
			TransportRaw:     transport(key),
			DynamicUpstreams: src,
			LoadBalancing:    lb,
		}
		if err := rp.Provision(h.ctx); err != nil {
			return nil, fmt.Errorf("target_group handler: setting up the proxy for group %q: %v", h.Group, err)
		}
		h.proxies[key] = rp
	}
	h.last.Store(&builtProxy{key, rp})
	return rp, nil
}

// ServeHTTP proxies the request to a target of the group. With no routable
// target the client gets a 503 that says why, at once.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	g := h.reg.Group(h.Group)
	if g == nil {
		return unavailable(w, fmt.Sprintf("target group %q does not exist", h.Group))
	}
	snap := g.Snapshot()
	if snap.Spec.Layer4() {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("target group %q has protocol %s, which reverse_proxy can't serve", h.Group, snap.Spec.Config.Protocol))
	}
	if len(snap.Routable) == 0 {
		return unavailable(w, snap.NoTargetReason(h.Group))
	}
	rp, err := h.proxyFor(snap.Spec)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	// The proxy returns when the response (or upgraded connection) is
	// done, so the handler ends the attempt itself, without a hook on the
	// request's context.
	at := &attempt{owned: true}
	caddyhttp.SetVar(r.Context(), varAttempt, at)
	defer func() { at.end(r, err) }()
	err = rp.ServeHTTP(w, r, next)
	return err
}

// neverMatch is a request matcher that matches nothing.
type neverMatch struct{}

func (neverMatch) MatchWithError(*http.Request) (bool, error) { return false, nil }

func unavailable(w http.ResponseWriter, msg string) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, err := fmt.Fprintf(w, "503 Service Unavailable: %s\n", msg)
	return err
}

// Cleanup releases the proxies built for the group.
func (h *Handler) Cleanup() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for _, rp := range h.proxies {
		errs = append(errs, rp.Cleanup())
	}
	return errors.Join(errs...)
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	target_group <group> {
//		retries <n>|off
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	group, err := groupArg(d)
	if err != nil {
		return err
	}
	h.Group = group
	for d.NextBlock(0) {
		switch d.Val() {
		case "retries":
			if err := parseRetries(d, &h.Retries); err != nil {
				return err
			}
		default:
			return d.Errf("target_group: unrecognized option '%s' (allowed: retries); the group's settings belong in the target_groups global option", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
