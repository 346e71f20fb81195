package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/layer4"
	"github.com/pires/go-proxyproto"
	"go.uber.org/zap"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

func init() {
	caddy.RegisterModule(new(Layer4Handler))
}

// Layer4Handler is the `layer4.handlers.target_group` module: the Network
// Load Balancer part of target groups. Inside a route of the layer4 app
// (github.com/mholt/caddy-l4) it proxies each connection, or each UDP flow,
// to one routable target of a TCP, TLS, UDP or TCP_UDP group. It is
// terminal: handlers after it never run.
//
// Every new TCP connection and every new UDP flow (the datagrams of one
// client address, until the layer4 server's idle_timeout passes without
// one) is one selection, pinned to its target for its lifetime, with the
// group's load_balancing.algorithm.type as for HTTP groups: round_robin by
// default, least_outstanding_requests picks the target with the fewest
// open connections. With stickiness.enabled (type source_ip) a client IP
// address always goes to the same target while that target stays
// routable (rendezvous hashing: when targets come or go, only the clients
// of those targets move). A target that refuses the connection is skipped
// and the next one tried, at most three in all.
//
// The group's protocol says how targets are reached: TCP and UDP as such,
// TLS over TLS without verifying the target's certificate, and TCP_UDP
// over the network the client came in on. TLS towards clients is the job
// of caddy-l4's own `tls` handler placed before this one; for TLS
// passthrough, use a TCP group.
//
// A group has at most the target_groups app's max_udp_flows_per_group UDP
// flows at once, across every layer4 server that routes to it: a new flow
// beyond the cap closes the group's least recently active flow first
// (whose client starts a new flow if it sends again).
//
// A route whose listener network the group's protocol does not carry (a
// udp listener to a TCP or TLS group, a tcp listener to a UDP group) is a
// config error, for the groups the config declares; for groups created
// through the API such connections are closed.
//
// Each connection counts in its target's in_flight (DescribeTargetHealth)
// while it is open. When the target's deregistration delay ends with
// deregistration_delay.connection_termination.enabled, or the target turns
// unhealthy with target_health_state.unhealthy.connection_termination.enabled,
// its connections are closed on both sides; otherwise they run until
// either end closes them.
//
// proxy_protocol_v2.enabled sends a PROXY protocol v2 header before any
// payload (for UDP, in front of every datagram; for TLS groups, before the
// TLS handshake): the client's address as source and the address the
// client reached Caddy on as destination (for UDP, the listener's own
// address, which is the wildcard address if Caddy listens on one).
//
// preserve_client_ip.enabled: Caddy opens its own connections to targets,
// from its own address. Making them appear to come from the client's
// address would take privileges (transparent sockets and policy routing)
// that Caddy does not use, so a target always sees Caddy's address as the
// source, whatever the attribute says; the attribute is accepted and
// reported, and changes nothing here. Enable proxy_protocol_v2 to tell
// targets the client's address.
type Layer4Handler struct {
	// The target group to proxy to.
	Group string `json:"group,omitempty"`

	// How long to wait for a target to accept a connection (and, for TLS
	// groups, to complete the handshake) before trying the next one.
	// Default: 10s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// How many other targets a connection may try when a target refuses
	// it or does not accept it within dial_timeout. 1-10; 0 (or no field)
	// means the default, 2 (three targets in all); -1 turns retries off.
	Retries int `json:"retries,omitempty"`

	reg       *targetgroup.Registry
	logger    *zap.Logger
	tlsConfig *tls.Config
}

// CaddyModule returns the Caddy module information.
func (*Layer4Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.handlers.target_group",
		New: func() caddy.Module { return new(Layer4Handler) },
	}
}

const defaultDialTimeout = 10 * time.Second

// Provision loads the target_groups app and checks that a group the config
// declares is a layer 4 one.
func (h *Layer4Handler) Provision(ctx caddy.Context) error {
	if h.Group == "" {
		return errors.New("layer4 target_group handler: group is required")
	}
	h.logger = ctx.Logger()
	if h.DialTimeout == 0 {
		h.DialTimeout = caddy.Duration(defaultDialTimeout)
	}
	app, err := appOf(ctx, h.Group)
	if err != nil {
		return err
	}
	h.reg = app.Registry()
	if spec := app.DeclaredSpec(h.Group); spec != nil && spec.Config.Type == targetgroup.TypeLambda {
		return fmt.Errorf("layer4 target_group handler: group %q is of type lambda; use the http target_group handler for it", h.Group)
	}
	if spec := app.DeclaredSpec(h.Group); spec != nil && !spec.Layer4() {
		return fmt.Errorf("layer4 target_group handler: group %q has protocol %s; use reverse_proxy or the http target_group handler for it", h.Group, spec.Config.Protocol)
	}
	if err := checkListeners(ctx, app); err != nil {
		return err
	}
	h.tlsConfig = &tls.Config{
		// As AWS load balancers do, targets are not authenticated: they may
		// use self-signed or expired certificates. The path to the target is
		// the operator's own network (on AWS, a VPC that authenticates every
		// packet); TLS here is for confidentiality, not identity.
		InsecureSkipVerify: true, //nolint:gosec // see above
		MinVersion:         tls.VersionTLS12,
		ClientSessionCache: tls.NewLRUClientSessionCache(0),
	}
	return nil
}

// Validate checks the handler's settings.
func (h *Layer4Handler) Validate() error {
	if h.DialTimeout < 0 {
		return fmt.Errorf("layer4 target_group handler: dial_timeout %s is negative", time.Duration(h.DialTimeout))
	}
	return checkRetries("layer4 target_group handler", h.Retries)
}

// Handle proxies the connection to a target of the group and returns once
// both directions are done. It is terminal: next is never called.
func (h *Layer4Handler) Handle(cx *layer4.Connection, _ layer4.Handler) error {
	g := h.reg.Group(h.Group)
	if g == nil {
		h.logger.Warn("closing connection: target group does not exist",
			zap.String("group", h.Group), zap.String("remote", cx.RemoteAddr().String()))
		return nil
	}
	snap := g.Snapshot()
	packet := isPacketConn(cx)
	network, err := targetNetwork(snap.Spec, packet)
	if err != nil {
		h.logger.Warn("closing connection", zap.String("group", h.Group), zap.String("remote", cx.RemoteAddr().String()), zap.Error(err))
		return nil
	}
	if len(snap.Routable) == 0 {
		h.logger.Warn("closing connection: no routable target",
			zap.String("group", h.Group), zap.String("remote", cx.RemoteAddr().String()),
			zap.String("reason", snap.NoTargetReason(h.Group)))
		return nil
	}

	var header []byte
	if snap.Spec.Attributes.ProxyProtocolV2 {
		if header, err = proxyproto.HeaderProxyFromAddrs(2, cx.RemoteAddr(), cx.LocalAddr()).Format(); err != nil {
			h.logger.Error("closing connection: building the PROXY protocol header", zap.String("group", h.Group), zap.String("remote", cx.RemoteAddr().String()), zap.Error(err))
			return nil
		}
	}

	f := &flow{down: cx, packet: packet}
	if packet {
		// Before any dial: at the group's cap this closes its least
		// recently active flow, so that new source ports cost at most the
		// cap in sockets, goroutines and buffers.
		f.slot = g.AdmitFlow(f)
		defer f.slot.Done()
	}
	clientIP := clientIP(cx.RemoteAddr())
	var tried []*targetgroup.Target
	var failures []error
	for len(tried) <= retriesOf(h.Retries) {
		i := snap.Pick(targetgroup.PickRequest{ClientIP: clientIP, OK: func(i int) bool { return !slices.Contains(tried, snap.Routable[i]) }})
		if i < 0 {
			break
		}
		t := snap.Routable[i]
		tried = append(tried, t)
		err := h.serve(g, t, f, network, header, snap.Spec.Config.Protocol == targetgroup.ProtocolTLS)
		if err == nil || f.isTerminated() {
			return nil
		}
		failures = append(failures, fmt.Errorf("%s: %w", t.Dial(), err))
	}
	h.logger.Error("closing connection: no target accepted it",
		zap.String("group", h.Group),
		zap.String("network", network),
		zap.String("remote", cx.RemoteAddr().String()),
		zap.Error(errors.Join(failures...)))
	return nil
}

// serve dials t and, once connected, relays the flow until it ends. It
// returns an error only when the target could not be reached.
func (h *Layer4Handler) serve(g *targetgroup.Group, t *targetgroup.Target, f *flow, network string, header []byte, useTLS bool) error {
	// No address allowed to dial right now (a host name resolving outside
	// allowed_cidrs): skipped as a refused dial would be, without counting
	// against the target's passive health, as nothing was sent to it.
	addr, err := t.DialAddr()
	if err != nil {
		return err
	}
	// The lease and the tracking start before the dial: a connection in
	// progress counts for least_outstanding_requests, and one the registry
	// closes while it is being dialed is abandoned.
	lease := t.Acquire()
	defer lease.Release()
	untrack := t.TrackConn(f)
	defer untrack()

	start := time.Now()
	up, raw, err := h.dial(network, t, addr, header, useTLS)
	if err == nil && !f.attach(raw) {
		_ = raw.Close()
		return errors.New("connection terminated while it was being dialed")
	}
	if err != nil {
		g.ReportProxyResult(t, true, err.Error())
		if ce := h.logger.Check(zap.DebugLevel, "target did not accept the connection"); ce != nil {
			ce.Write(zap.String("group", h.Group), zap.String("target", t.Dial()), zap.Error(err))
		}
		return err
	}
	g.ReportProxyResult(t, false, "")
	t.Connected()
	defer up.Close()

	var sent, received int64
	if f.packet {
		sent, received, err = relayPackets(f, up, header)
	} else {
		sent, received, err = relayStream(f, up)
	}
	g.Relayed(sent, received)
	if ce := h.logger.Check(zap.DebugLevel, "connection closed"); ce != nil {
		ce.Write(
			zap.String("group", h.Group),
			zap.String("network", network),
			zap.String("remote", f.down.RemoteAddr().String()),
			zap.String("target", t.Dial()),
			zap.Int64("bytes_to_target", sent),
			zap.Int64("bytes_from_target", received),
			zap.Duration("duration", time.Since(start)),
			zap.Bool("terminated", f.isTerminated()),
			zap.Error(err))
	}
	return nil
}

// dial connects to t at addr, sends the PROXY header on a stream and, for
// TLS groups, completes the TLS handshake (with the target's host name, if
// it has one, as server name). It returns the connection to relay through
// and the raw socket under it.
func (h *Layer4Handler) dial(network string, t *targetgroup.Target, addr string, header []byte, useTLS bool) (up, raw net.Conn, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(h.DialTimeout))
	defer cancel()
	var d net.Dialer
	raw, err = d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, nil, err
	}
	if network == "udp" {
		return raw, raw, nil
	}
	if len(header) > 0 {
		// Before anything else, TLS handshake included (as HAProxy's
		// accept-proxy and AWS expect).
		if _, err := raw.Write(header); err != nil {
			_ = raw.Close()
			return nil, nil, fmt.Errorf("sending the PROXY protocol header: %w", err)
		}
	}
	if !useTLS {
		return raw, raw, nil
	}
	cfg := h.tlsConfig
	if host, _, err := net.SplitHostPort(t.Dial()); err == nil {
		if _, err := netip.ParseAddr(host); err != nil {
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, raw, nil
}

// checkListeners refuses, at config load, a route of the layer4 app that
// takes connections of a network its group's protocol does not carry (a
// udp listener to a TCP group, a tcp listener to a UDP group), instead of
// closing every such connection once running. Only groups the config
// declares are known here; those created through the API are checked per
// connection, as are handlers outside the layer4 app (caddy-l4's listener
// wrapper), whose listeners are not the layer4 app's.
//
// The layer4 app provisions its servers, and they their routes, one after
// the other; Caddy drops a route's handler JSON once all its handlers are
// provisioned. So when the first target_group handler of an app
// provisions, every route with one still has its JSON: that first call
// checks them all, and the app is remembered as checked until its config
// ends.
func checkListeners(ctx caddy.Context, groups *targetgroup.App) error {
	var app *layer4.App
	for _, m := range ctx.Modules() {
		if a, ok := m.(*layer4.App); ok {
			app = a
			break
		}
	}
	if app == nil {
		return nil
	}
	checkedApps.mu.Lock()
	defer checkedApps.mu.Unlock()
	if checkedApps.apps[app] {
		return nil
	}
	if checkedApps.apps == nil {
		checkedApps.apps = make(map[*layer4.App]bool)
	}
	checkedApps.apps[app] = true
	context.AfterFunc(ctx, func() {
		checkedApps.mu.Lock()
		delete(checkedApps.apps, app)
		checkedApps.mu.Unlock()
	})

	names := make([]string, 0, len(app.Servers))
	for name := range app.Servers {
		names = append(names, name)
	}
	sort.Strings(names)
	repl := caddy.NewReplacer()
	for _, name := range names {
		srv := app.Servers[name]
		var used []string
		for _, r := range srv.Routes {
			for _, raw := range r.HandlersRaw {
				used = handlerGroups(used, raw)
			}
		}
		for _, group := range used {
			spec := groups.DeclaredSpec(group)
			if spec == nil || !spec.Layer4() {
				continue // unknown until run time, or refused by its own handler
			}
			for _, listen := range srv.Listen {
				// As the layer4 server reads its addresses.
				addr, err := caddy.ParseNetworkAddress(repl.ReplaceAll(listen, ""))
				if err != nil {
					continue // the server reports it
				}
				packet := isPacketNetwork(addr.Network)
				if _, err := targetNetwork(spec, packet); err == nil {
					continue
				}
				kind, carries, fits := "stream", "streams", "TCP, TLS or TCP_UDP"
				if packet {
					kind, carries, fits = "datagram", "datagrams", "UDP or TCP_UDP"
				}
				return fmt.Errorf("layer4 server %q: listener %q (network %s) routes to target group %q, whose protocol %s does not carry %s; a %s listener fits a group of protocol %s",
					name, listen, addr.Network, group, spec.Config.Protocol, carries, kind, fits)
			}
		}
	}
	return nil
}

// checkedApps are the layer4 apps of configs being loaded or running whose
// routes checkListeners has checked.
var checkedApps struct {
	mu   sync.Mutex
	apps map[*layer4.App]bool
}

// handlerGroups appends the groups of the target_group handlers in one
// handler's JSON, those nested in it (subroute) included.
func handlerGroups(groups []string, raw json.RawMessage) []string {
	if !bytes.Contains(raw, []byte(`"target_group"`)) {
		return groups
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return groups // its module reports it
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if h, _ := v["handler"].(string); h == "target_group" {
				if g, ok := v["group"].(string); ok && !slices.Contains(groups, g) {
					groups = append(groups, g)
				}
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(v)
	return groups
}

// isPacketNetwork tells the networks whose listeners caddy-l4 serves as
// datagrams (its packet connections) from stream listeners.
func isPacketNetwork(network string) bool {
	return strings.HasPrefix(network, "udp") || network == "unixgram" || network == "fdgram"
}

// targetNetwork is the network targets are dialed on: the group's, and for
// TCP_UDP groups the one the client used.
func targetNetwork(spec *targetgroup.Spec, packet bool) (string, error) {
	p := spec.Config.Protocol
	switch {
	case spec.Config.Type == targetgroup.TypeLambda:
		return "", errors.New("target group is of type lambda, which the layer4 handler can't serve; use the http target_group handler")
	case !spec.Layer4():
		return "", fmt.Errorf("target group has protocol %s, which the layer4 handler can't serve; use reverse_proxy", p)
	case p == targetgroup.ProtocolTCPUDP && packet, p == targetgroup.ProtocolUDP && packet:
		return "udp", nil
	case p == targetgroup.ProtocolTCPUDP, (p == targetgroup.ProtocolTCP || p == targetgroup.ProtocolTLS) && !packet:
		return "tcp", nil
	case packet:
		return "", fmt.Errorf("target group has protocol %s, which does not carry UDP", p)
	default:
		return "", fmt.Errorf("target group has protocol %s, which does not carry TCP", p)
	}
}

// isPacketConn tells caddy-l4's per-client view of a UDP socket from a
// stream connection.
func isPacketConn(cx *layer4.Connection) bool {
	switch a := cx.LocalAddr().(type) {
	case *net.UDPAddr:
		return true
	case *net.UnixAddr:
		return a.Net == "unixgram"
	}
	return false
}

func clientIP(a net.Addr) string {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.String()
	case *net.UDPAddr:
		return a.IP.String()
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens, inside a
// route of the layer4 app:
//
//	target_group <group> {
//		dial_timeout <duration>
//		retries <n>|off
//	}
func (h *Layer4Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return parseHandler(d, &h.Group, &h.Retries, &h.DialTimeout,
		"target_group: unrecognized option '%s'; the group's settings belong in the target_groups global option")
}

// Interface guards
var (
	_ caddy.Provisioner     = (*Layer4Handler)(nil)
	_ caddy.Validator       = (*Layer4Handler)(nil)
	_ layer4.NextHandler    = (*Layer4Handler)(nil)
	_ caddyfile.Unmarshaler = (*Layer4Handler)(nil)
)
