package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

func init() {
	caddy.RegisterModule(new(Handler))
}

// Handler is the `http.handlers.target_group` module: a reverse_proxy wired
// to one target group — the target_group upstream source and selection
// policy — with the transport the group's protocol asks for: HTTP/1.1, h2c
// for HTTP2 and GRPC, and for HTTPS groups TLS without certificate
// verification (as AWS load balancers do with their targets). A lambda
// group's function is invoked instead (see serveLambda): this handler is
// the one way to serve lambda groups.
type Handler struct {
	// The target group to proxy to.
	Group string `json:"group,omitempty"`

	// How many other targets a request may try when a target can't be
	// reached (connection refused, dial timeout): nothing was sent, so a
	// retry is safe for every method. A request that reached a target is
	// never sent again. 1-10; 0 (or no field) means the default, 2 (three
	// targets in all); -1 turns retries off.
	Retries int `json:"retries,omitempty"`

	reg *targetgroup.Registry
	// proxies holds a reverse_proxy for every transport a group's protocol
	// may ask for, all built at Provision: a group created or changed
	// through the API later needs no module provisioned on the request path
	// (the config's caddy.Context is not safe for that). Read-only after
	// Provision.
	proxies map[transportKey]*reverseproxy.Handler
	// lambda invokes the functions of lambda groups.
	lambda *lambdaInvoker
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.target_group",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision loads the target_groups app, checks that a group the config
// declares is an HTTP one and builds the proxies.
func (h *Handler) Provision(ctx caddy.Context) error {
	if h.Group == "" {
		return errors.New("target_group handler: group is required")
	}
	if err := checkRetries("target_group handler", h.Retries); err != nil {
		return err
	}
	app, err := appOf(ctx, h.Group)
	if err != nil {
		return err
	}
	h.reg = app.Registry()
	h.logger = ctx.Logger()
	h.lambda, _ = app.LambdaInvoker().(*lambdaInvoker)
	if spec := app.DeclaredSpec(h.Group); spec != nil && spec.Layer4() {
		return fmt.Errorf("target_group handler: group %q has protocol %s; use the layer4 target_group handler for it", h.Group, spec.Config.Protocol)
	}
	h.proxies = make(map[transportKey]*reverseproxy.Handler, len(transportKeys))
	built := map[string]*reverseproxy.Handler{}
	for _, key := range transportKeys {
		raw := transport(key)
		if rp := built[string(raw)]; rp != nil {
			h.proxies[key] = rp
			continue
		}
		rp, err := h.newProxy(ctx, raw)
		if err != nil {
			return err
		}
		built[string(raw)] = rp
		h.proxies[key] = rp
	}
	return nil
}

// transportKey is what decides a group's transport.
type transportKey struct{ protocol, version string }

// transportKeys are every protocol and version an HTTP group may have.
var transportKeys = []transportKey{
	{targetgroup.ProtocolHTTP, targetgroup.VersionHTTP1},
	{targetgroup.ProtocolHTTP, targetgroup.VersionHTTP2},
	{targetgroup.ProtocolHTTP, targetgroup.VersionGRPC},
	{targetgroup.ProtocolHTTPS, targetgroup.VersionHTTP1},
	{targetgroup.ProtocolHTTPS, targetgroup.VersionHTTP2},
	{targetgroup.ProtocolHTTPS, targetgroup.VersionGRPC},
}

func keyOf(spec *targetgroup.Spec) transportKey {
	return transportKey{spec.Config.Protocol, spec.Config.ProtocolVersion}
}

// newProxy provisions a reverse_proxy with the group's upstream source,
// selection policy and the given transport, whose every dial is checked
// against allowed_cidrs.
func (h *Handler) newProxy(ctx caddy.Context, transportRaw json.RawMessage) (*reverseproxy.Handler, error) {
	src := &UpstreamSource{Group: h.Group, reg: h.reg}
	lb := &reverseproxy.LoadBalancing{SelectionPolicy: &SelectionPolicy{Group: h.Group, reg: h.reg}}
	if retries := retriesOf(h.Retries); retries > 0 {
		lb.Retries = retries
		// reverse_proxy retries dial errors whatever the matchers say;
		// a matcher that never matches keeps it from sending a GET
		// that reached a target a second time.
		lb.RetryMatch = caddyhttp.MatcherSets{{neverMatch{}}}
	}
	rp := &reverseproxy.Handler{
		TransportRaw:     transportRaw,
		DynamicUpstreams: src,
		LoadBalancing:    lb,
	}
	if err := rp.Provision(ctx); err != nil {
		return nil, fmt.Errorf("target_group handler: setting up the proxy for group %q: %v", h.Group, err)
	}
	ht, ok := rp.Transport.(*reverseproxy.HTTPTransport)
	if !ok || ht.Transport == nil || ht.Transport.DialContext == nil {
		return nil, fmt.Errorf("target_group handler: unexpected transport %T", rp.Transport)
	}
	// The upstream source hands over checked addresses only; checking the
	// address again as it is dialed keeps that true whatever reaches the
	// transport. A refused dial is a dial error, so the request tries
	// another target.
	dial := ht.Transport.DialContext
	ht.Transport.DialContext = func(ctx context.Context, network, address string) (net.Conn, error) {
		if err := h.reg.CheckDial(address); err != nil {
			return nil, reverseproxy.NewDialError(err)
		}
		return dial(ctx, network, address)
	}
	return rp, nil
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

// ServeHTTP proxies the request to a target of the group. With no routable
// target it fails at once with a 503 Caddy error: the site's handle_errors
// renders it (the reason is {http.error.message}), and without one the
// client gets an empty 503 while the reason goes to Caddy's log.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	g := h.reg.Group(h.Group)
	if g == nil {
		return unavailable(fmt.Sprintf("target group %q does not exist", h.Group))
	}
	snap := g.Snapshot()
	if len(snap.Routable) == 0 {
		return unavailable(snap.NoTargetReason(h.Group))
	}
	if snap.Spec.Config.Type == targetgroup.TypeLambda {
		return h.serveLambda(w, r, g, snap)
	}
	rp := h.proxies[keyOf(snap.Spec)]
	if rp == nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("target group %q has protocol %s, which reverse_proxy can't serve", h.Group, snap.Spec.Config.Protocol))
	}
	// The attempt carries the group to the source and the policy; the
	// proxy returns once the response (or upgraded connection) is done, so
	// the handler ends it then, without a hook on the request's context.
	at := newAttempt(r, g)
	at.owned = true
	err := rp.ServeHTTP(w, r, next)
	if err != nil {
		at.dialFailed(err)
	}
	at.end(r)
	return err
}

// neverMatch is a request matcher that matches nothing.
type neverMatch struct{}

func (neverMatch) MatchWithError(*http.Request) (bool, error) { return false, nil }

func unavailable(msg string) error {
	return caddyhttp.Error(http.StatusServiceUnavailable, errors.New(msg))
}

// Cleanup releases the proxies built for the group.
func (h *Handler) Cleanup() error {
	var errs []error
	done := map[*reverseproxy.Handler]bool{}
	for _, rp := range h.proxies {
		if !done[rp] {
			done[rp] = true
			errs = append(errs, rp.Cleanup())
		}
	}
	return errors.Join(errs...)
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	target_group <group> {
//		retries <n>|off
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return parseHandler(d, &h.Group, &h.Retries, nil,
		"target_group: unrecognized option '%s' (allowed: retries); the group's settings belong in the target_groups global option")
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
