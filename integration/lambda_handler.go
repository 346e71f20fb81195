package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// serveLambda answers a request to a lambda group: the function of its
// one target gets the request as an event (ALB's, or VPC Lattice's V1 or
// V2) and its answer becomes the response. A failed invocation is a Caddy
// error with the status ALB would give (502 for a function error or a
// malformed answer, 504 past lambda.timeout, 503 when throttled), logged
// once with the function and the reason.
func (h *Handler) serveLambda(w http.ResponseWriter, r *http.Request, g *targetgroup.Group, snap *targetgroup.Snapshot) error {
	if h.lambda == nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("target group %q is of type lambda, and this Caddy has no Lambda invoker", h.Group))
	}
	spec := snap.Spec
	if isUpgrade(r) {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("target group %q is of type lambda: WebSocket and other protocol upgrades are not supported", h.Group))
	}
	version := spec.Config.LambdaEventStructureVersion
	limit := lambdaLimit(version)
	if r.ContentLength > int64(limit) {
		return h.lambdaTooLarge(g, fmt.Sprintf("%d bytes, more than the %d a lambda target group accepts", r.ContentLength, limit))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("reading the request body: %v", err))
	}
	if len(body) > limit {
		return h.lambdaTooLarge(g, fmt.Sprintf("more than the %d bytes a lambda target group accepts", limit))
	}
	i := snap.Pick(targetgroup.PickRequest{})
	if i < 0 {
		return unavailable(snap.NoTargetReason(h.Group))
	}
	t := snap.Routable[i]
	function := t.Key().ID
	event, err := buildEvent(lambdaRequestOf(r, body, g, spec, h.lambda.appRegion))
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	start := time.Now()
	lease := t.Acquire()
	payload, fe, fail := h.lambda.invoke(r.Context(), function, event, h.lambda.timeout)
	var ans *lambdaAnswer
	if fail == nil {
		ans, fail = parseAnswer(payload, fe, limit, spec.Attributes.LambdaMultiValueHeaders && version == eventALB)
	}
	elapsed := time.Since(start)
	if fail != nil {
		lease.End(elapsed, 0, fail.status != 499, fail.Error())
		level := zap.WarnLevel
		if fail.status == 499 {
			level = zap.DebugLevel
		}
		h.logger.Log(level, "lambda invocation failed",
			zap.String("group", h.Group), zap.String("function", function), zap.Int("status", fail.status),
			zap.String("reason", fail.reason), zap.String("detail", fail.detail), zap.Duration("duration", elapsed))
		return caddyhttp.Error(fail.status, fmt.Errorf("lambda function %s: %w", function, fail))
	}
	lease.End(elapsed, ans.status, ans.status >= 502 && ans.status <= 504, "the function answered "+strconv.Itoa(ans.status))
	for k, vs := range ans.header {
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(ans.body)))
	w.WriteHeader(ans.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(ans.body)
	}
	return nil
}

// lambdaTooLarge refuses a request whose body is over the event's limit,
// without invoking the function.
func (h *Handler) lambdaTooLarge(g *targetgroup.Group, detail string) error {
	h.logger.Info("lambda request refused", zap.String("group", g.Name()), zap.Int("status", http.StatusRequestEntityTooLarge), zap.String("reason", reasonRequestTooLarge), zap.String("detail", detail))
	return caddyhttp.Error(http.StatusRequestEntityTooLarge, errors.New("request body too large for a lambda target group: "+detail))
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" || r.Method == http.MethodConnect
}

// lambdaRequestOf is what the event of r is made of.
func lambdaRequestOf(r *http.Request, body []byte, g *targetgroup.Group, spec *targetgroup.Spec, region string) *lambdaRequest {
	req := &lambdaRequest{
		Version:    spec.Config.LambdaEventStructureVersion,
		MultiValue: spec.Attributes.LambdaMultiValueHeaders,
		ALBARN:     g.ARN(),
		LatticeARN: g.LatticeARN(),
		Region:     region,
		Method:     r.Method,
		Path:       r.URL.EscapedPath(),
		RawQuery:   r.URL.RawQuery,
		Host:       r.Host,
		Header:     r.Header,
		Body:       body,
		Proto:      "http",
		Now:        time.Now(),
	}
	if r.TLS != nil {
		req.Proto = "https"
	}
	// ALB appends its peer's address to x-forwarded-for, whatever the
	// header already says.
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		req.ClientIP = host
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if _, port, err := net.SplitHostPort(la.String()); err == nil {
			req.Port = port
		}
	}
	return req
}
