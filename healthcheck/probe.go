package healthcheck

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Reason codes, spelled as AWS reports them in DescribeTargetHealth so that
// operators and tools can reuse what they know.
const (
	ReasonResponseCodeMismatch = "Target.ResponseCodeMismatch"
	ReasonTimeout              = "Target.Timeout"
	ReasonFailedHealthChecks   = "Target.FailedHealthChecks"
)

// UserAgent is sent with every HTTP(S) check so operators can recognise and
// exclude checks in their logs.
const UserAgent = "Caddy-TargetGroup-HealthChecker/1.0"

// Defaults applied by Probe to empty Spec fields, as AWS applies them.
const (
	DefaultPath     = "/"
	DefaultGRPCPath = "/AWS.ALB/healthcheck"
	DefaultTimeout  = 5 * time.Second
)

// GRPCHealthMethod is the method of the standard gRPC health service; its
// answer carries a serving status that matters besides the code.
const GRPCHealthMethod = "/grpc.health.v1.Health/Check"

// maxBody bounds how much of a response is read: the body is never
// inspected, but reading a little lets well-behaved servers finish cleanly
// while a huge or endless body cannot pin a check.
const maxBody = 64 << 10

// maxHeaderBytes bounds the response headers of an HTTP or gRPC check, and
// maxGRPCMessage the answer of a gRPC check, which grpc buffers whole even
// though it is discarded. The libraries' defaults (10 MiB of HTTP headers,
// 16 MiB of gRPC headers, 4 MiB messages) would let any target make every
// check in flight buffer megabytes; a healthy target answers in far less.
const (
	maxHeaderBytes = 64 << 10
	maxGRPCMessage = 64 << 10
)

// Spec describes one health check, in the terms of an AWS target group.
type Spec struct {
	Protocol        string        // "HTTP", "HTTPS" or "TCP"
	ProtocolVersion string        // "HTTP1" (default when empty), "HTTP2" or "GRPC"; ignored for TCP
	Path            string        // request path (may include ?query); for GRPC the full method "/package.Service/Method"
	Host            string        // optional Host header / TLS SNI; default: the dialed address
	Timeout         time.Duration // end to end, dial included; DefaultTimeout when <= 0
	Matcher         Matcher       // success codes; "200" (HTTP) or "12" (GRPC) when zero
}

// Result is the outcome of one check.
type Result struct {
	Healthy     bool
	Code        int    // HTTP status or gRPC code seen; -1 when no response
	Reason      string // "" when healthy, else one of the Reason* constants
	Description string // human-readable detail
}

// Prober runs checks. One Prober is meant to be shared by every target: it
// holds the HTTP transports, which are safe for concurrent use. Because
// keep-alives are disabled it pools no connections, so sharing it costs
// nothing in file descriptors.
type Prober struct {
	dialer net.Dialer
	http1  *http.Transport
	http2  *http.Transport
}

// target travels in the request context to the transport's dial hooks: the
// transports are shared, yet each check needs its own network and SNI.
type target struct {
	network    string
	serverName string
}

type targetKey struct{}

// NewProber returns a Prober ready for use.
func NewProber() *Prober {
	p := &Prober{}
	// Health-check connections are short-lived; TCP keep-alive probes would
	// only add timers.
	p.dialer.KeepAlive = -1

	var v1, v2 http.Protocols
	v1.SetHTTP1(true)
	// HTTP2 means HTTP/2 only, as on ALB: ALPN "h2" over TLS and prior
	// knowledge (h2c) in clear text. A target that speaks only HTTP/1 fails.
	v2.SetHTTP2(true)
	v2.SetUnencryptedHTTP2(true)
	p.http1 = p.newTransport(v1, "http/1.1")
	p.http2 = p.newTransport(v2, "h2")
	return p
}

func (p *Prober) newTransport(protos http.Protocols, alpn string) *http.Transport {
	return &http.Transport{
		Proxy:       nil, // checks go to the target itself, never through a proxy
		DialContext: p.dialContext,
		DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return p.dialTLS(ctx, addr, alpn)
		},
		// A fresh connection per check, as ELB does: it proves the target
		// still accepts connections, and thousands of targets leave no idle
		// connections behind.
		DisableKeepAlives:      true,
		DisableCompression:     true, // the body is discarded; don't ask for gzip
		MaxResponseHeaderBytes: maxHeaderBytes,
		Protocols:              &protos,
	}
}

func (p *Prober) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if t, ok := ctx.Value(targetKey{}).(*target); ok {
		network = t.network
	}
	return p.dialer.DialContext(ctx, network, addr)
}

// dialTLS replaces the transport's own TLS dial because the transport takes
// the SNI from the URL, which names the target's address, whereas Spec.Host
// must be able to set it independently.
func (p *Prober) dialTLS(ctx context.Context, addr, alpn string) (net.Conn, error) {
	conn, err := p.dialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		// ELB does not verify target certificates: targets commonly use
		// self-signed certificates or are addressed by IP, and the check is
		// about liveness, not identity.
		InsecureSkipVerify: true, //nolint:gosec // see above
		NextProtos:         []string{alpn},
	}
	if t, ok := ctx.Value(targetKey{}).(*target); ok {
		cfg.ServerName = t.serverName
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}

// Close releases idle resources. The Prober remains usable.
func (p *Prober) Close() {
	p.http1.CloseIdleConnections()
	p.http2.CloseIdleConnections()
}

// Probe runs one check against addr ("host:port") over network ("tcp",
// "tcp4" or "tcp6"). The check is bounded by spec.Timeout and by ctx.
func (p *Prober) Probe(ctx context.Context, network, addr string, spec Spec) Result {
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	proto := strings.ToUpper(spec.Protocol)
	version := strings.ToUpper(spec.ProtocolVersion)
	switch {
	case proto == "TCP":
		return p.probeTCP(ctx, network, addr)
	case proto != "HTTP" && proto != "HTTPS":
		return failed(fmt.Sprintf("unsupported protocol %q", spec.Protocol))
	case version == "GRPC":
		return p.probeGRPC(ctx, network, addr, proto == "HTTPS", spec)
	case version == "" || version == "HTTP1":
		return p.probeHTTP(ctx, p.http1, network, addr, proto, spec)
	case version == "HTTP2":
		return p.probeHTTP(ctx, p.http2, network, addr, proto, spec)
	}
	return failed(fmt.Sprintf("unsupported protocol version %q", spec.ProtocolVersion))
}

func (p *Prober) probeTCP(ctx context.Context, network, addr string) Result {
	conn, err := p.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return errResult(ctx, err)
	}
	// Reset rather than close gracefully, as many L4 health checkers do: the
	// check leaves no TIME_WAIT socket behind, which matters at thousands of
	// checks a second.
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
	return Result{Healthy: true, Code: -1}
}

func (p *Prober) probeHTTP(ctx context.Context, rt *http.Transport, network, addr, proto string, spec Spec) Result {
	path := spec.Path
	if path == "" {
		path = DefaultPath
	} else if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	ctx = context.WithValue(ctx, targetKey{}, &target{network: network, serverName: serverName(spec.Host, addr)})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.ToLower(proto)+"://"+addr+path, nil)
	if err != nil {
		return failed(err.Error())
	}
	if spec.Host != "" {
		req.Host = spec.Host
	}
	req.Header.Set("User-Agent", UserAgent)
	// RoundTrip rather than an http.Client: no redirect is ever followed (a
	// 301 is a code to match, as on ELB) and no cookie is kept.
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return errResult(ctx, err)
	}
	// The verdict depends on the code only, so a body read error is ignored.
	io.CopyN(io.Discard, resp.Body, maxBody)
	resp.Body.Close()
	return codeResult(resp.StatusCode, matcherOr(spec.Matcher, false))
}

func (p *Prober) probeGRPC(ctx context.Context, network, addr string, useTLS bool, spec Spec) Result {
	creds := insecure.NewCredentials()
	if useTLS {
		creds = credentials.NewTLS(&tls.Config{
			InsecureSkipVerify: true, //nolint:gosec // as for HTTPS: ELB does not verify targets
			ServerName:         serverName(spec.Host, addr),
		})
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return p.dialer.DialContext(ctx, network, a)
		}),
		grpc.WithUserAgent(UserAgent),
		// One attempt per check: retries would blur what the check measures.
		grpc.WithDisableRetry(),
		grpc.WithDisableServiceConfig(),
		grpc.WithMaxHeaderListSize(maxHeaderBytes),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxGRPCMessage)),
	}
	if spec.Host != "" {
		opts = append(opts, grpc.WithAuthority(spec.Host))
	}
	// passthrough: addr is already resolved; no DNS resolver is wanted.
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return failed(err.Error())
	}
	defer conn.Close()

	method := spec.Path
	if method == "" {
		method = DefaultGRPCPath
	}
	var (
		pr      peer.Peer
		serving = grpc_health_v1.HealthCheckResponse_SERVING
	)
	if method == GRPCHealthMethod {
		var resp grpc_health_v1.HealthCheckResponse
		err = conn.Invoke(ctx, method, &grpc_health_v1.HealthCheckRequest{}, &resp, grpc.Peer(&pr))
		if err == nil {
			// Only an answer has a serving status; an error code is left to
			// the matcher alone.
			serving = resp.GetStatus()
		}
	} else {
		// The answer to an arbitrary method is never decoded, so any
		// service, whatever its message types, can be checked.
		err = conn.Invoke(ctx, method, nil, nil, grpc.Peer(&pr), grpc.ForceCodec(emptyCodec{}))
	}
	if err != nil && ctx.Err() != nil {
		return errResult(ctx, ctx.Err())
	}
	st := status.Convert(err)
	if grpcGaveUp(st) {
		// No matcher applies to a code the target never sent: an oversized
		// answer must not pass a "0-99" matcher as code 8, 13 or 14.
		return failed(st.Message())
	}
	if pr.Addr == nil && st.Code() != codes.OK {
		// No stream was ever opened: nothing answered, whatever code grpc
		// synthesised for it (usually Unavailable), so no matcher applies.
		return failed(st.Message())
	}
	res := codeResult(int(st.Code()), matcherOr(spec.Matcher, true))
	if res.Healthy && serving != grpc_health_v1.HealthCheckResponse_SERVING {
		return Result{
			Code:        res.Code,
			Reason:      ReasonFailedHealthChecks,
			Description: "Health check service status: " + serving.String(),
		}
	}
	return res
}

// grpcGaveUp tells whether grpc itself ended the call over how the target
// answered: past one of the bounds set on the connection, or breaking the
// protocol so that the connection failed under the call (which is also how
// grpc reports headers far past the bound). The code is then grpc's own, not
// the target's. grpc says so only through a code and a message; the
// messages are pinned by tests, so that a grpc upgrade rewording them is
// noticed.
func grpcGaveUp(st *status.Status) bool {
	switch st.Code() {
	case codes.ResourceExhausted:
		return strings.HasPrefix(st.Message(), "grpc: received message larger than max")
	case codes.Internal:
		return st.Message() == "peer header list size exceeded limit"
	case codes.Unavailable:
		return strings.HasPrefix(st.Message(), "error reading from server")
	}
	return false
}

// emptyCodec sends an empty message and discards the answer. Its name is
// "proto" so that the request carries the plain "application/grpc" content
// type every server accepts; zero bytes are a valid empty protobuf message.
type emptyCodec struct{}

func (emptyCodec) Marshal(any) ([]byte, error) { return nil, nil }
func (emptyCodec) Unmarshal([]byte, any) error { return nil }
func (emptyCodec) Name() string                { return "proto" }

// serverName is the TLS SNI: the host of Spec.Host when set, else the host
// of the dialed address (crypto/tls omits SNI for IP addresses).
func serverName(host, addr string) string {
	if host == "" {
		host = addr
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return strings.Trim(host, "[]")
}

func matcherOr(m Matcher, grpc bool) Matcher {
	if m.isZero() {
		m, _ = ParseMatcher(defaultSpec(grpc), grpc)
	}
	return m
}

func codeResult(code int, m Matcher) Result {
	if m.Match(code) {
		return Result{Healthy: true, Code: code}
	}
	return Result{
		Code:        code,
		Reason:      ReasonResponseCodeMismatch,
		Description: fmt.Sprintf("Health checks failed with these codes: [%d]", code),
	}
}

func failed(desc string) Result {
	return Result{Code: -1, Reason: ReasonFailedHealthChecks, Description: desc}
}

// errResult classifies a failure to get any response. ctx is the check's own
// context, so its deadline is the check's timeout, whereas a cancelled parent
// (the scheduler stopping) is an ordinary failure.
func errResult(ctx context.Context, err error) Result {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return Result{Code: -1, Reason: ReasonTimeout, Description: "Request timed out"}
	}
	return failed(err.Error())
}
