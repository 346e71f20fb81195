package targetgroup

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-targetgroup/caddy-targetgroup/healthcheck"
)

func TestLambdaConfigValidation(t *testing.T) {
	c, err := LambdaConfig{}.withDefaults()
	if err != nil || time.Duration(c.Timeout) != DefaultLambdaTimeout {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	for _, tc := range []struct {
		cfg   LambdaConfig
		field string
	}{
		{LambdaConfig{Endpoint: "http://127.0.0.1:9000"}, ""},
		{LambdaConfig{Endpoint: "https://lambda.example.com/base/"}, ""},
		{LambdaConfig{Endpoint: "127.0.0.1:9000"}, "lambda.endpoint"},
		{LambdaConfig{Endpoint: "ftp://host"}, "lambda.endpoint"},
		{LambdaConfig{Endpoint: "http://host/?q=1"}, "lambda.endpoint"},
		{LambdaConfig{Region: "us-east-1"}, ""},
		{LambdaConfig{Region: "US_EAST"}, "lambda.region"},
		{LambdaConfig{MaxConcurrentInvocations: -1}, "lambda.max_concurrent_invocations"},
		{LambdaConfig{MaxConcurrentInvocations: 1}, ""},
		{LambdaConfig{Timeout: caddy.Duration(500 * time.Millisecond)}, "lambda.timeout"},
		{LambdaConfig{Timeout: caddy.Duration(16 * time.Minute)}, "lambda.timeout"},
	} {
		err := tc.cfg.Validate()
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%+v: %v", tc.cfg, err)
		case tc.field != "" && (err == nil || !strings.Contains(err.Error(), tc.field)):
			t.Errorf("%+v: %v, want an error about %s", tc.cfg, err, tc.field)
		}
	}
}

// stubLambda answers every health check with the result it holds.
type stubLambda struct {
	res      healthcheck.Result
	function string
	calls    int
}

func (s *stubLambda) CheckHealth(ctx context.Context, g *Group, function string, spec *Spec) healthcheck.Result {
	s.function = function
	s.calls++
	return s.res
}

// A lambda target is routable without an address: unavailable with
// health checks off, healthy once its health check passes.
func TestLambdaTargetsRoute(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Type: TypeLambda}, named("fn-off"))
	off := &stubLambda{res: healthcheck.Result{Code: 500, Reason: ReasonResponseCodeMismatch}}
	l.reg.lambda.Store(&lambdaHolder{inv: off})
	mustRegister(t, l.reg, "fn-off", []TargetConfig{{ID: "function"}})
	runHealthRound(l.g)
	snap := l.g.Snapshot()
	if len(snap.Routable) != 1 || snap.Dial(0) != "" || !snap.IsHealthy(0) || snap.Unavailable != 1 || off.calls != 0 {
		t.Fatalf("health checks off: routable %d, unavailable %d, %d checks", len(snap.Routable), snap.Unavailable, off.calls)
	}

	on := true
	l = newLifecycle(t, &GroupConfig{Type: TypeLambda, HealthCheck: &HealthCheckConfig{Enabled: &on}}, named("fn-on"))
	stub := &stubLambda{res: healthcheck.Result{Healthy: true, Code: 200}}
	l.reg.lambda.Store(&lambdaHolder{inv: stub})
	mustRegister(t, l.reg, "fn-on", []TargetConfig{{ID: "function"}})
	if snap := l.g.Snapshot(); len(snap.Routable) != 0 || snap.Initial != 1 {
		t.Fatalf("before its first check: routable %d, initial %d", len(snap.Routable), snap.Initial)
	}
	if spec := l.g.Spec(); spec.HealthCheck.Interval != 35*time.Second || spec.HealthCheck.Probe.Timeout != 30*time.Second {
		t.Errorf("lambda health-check defaults: %s, %s", spec.HealthCheck.Interval, spec.HealthCheck.Probe.Timeout)
	}
	runHealthRound(l.g)
	if snap := l.g.Snapshot(); len(snap.Routable) != 1 || snap.Healthy != 1 || stub.function != "function" {
		t.Fatalf("after a passing check: routable %d, healthy %d, function %q", len(snap.Routable), snap.Healthy, stub.function)
	}

	// Failing checks (unhealthy_threshold 2) take it out, passing ones
	// (healthy_threshold 5) bring it back.
	stub.res = healthcheck.Result{Code: 500, Reason: ReasonResponseCodeMismatch, Description: "Health checks failed with these codes: [500]"}
	runHealthRound(l.g)
	if d := l.g.DescribeTargetHealth(TargetKey{ID: "function"})[0].TargetHealth; d.State != StateHealthy {
		t.Errorf("after one failed check: %+v", d)
	}
	runHealthRound(l.g)
	if d := l.g.DescribeTargetHealth(TargetKey{ID: "function"})[0].TargetHealth; d.State != StateUnhealthy || d.Reason != ReasonResponseCodeMismatch {
		t.Errorf("after two failed checks: %+v", d)
	}
	// As every ELB target group, it fails open: the function is still invoked.
	if snap := l.g.Snapshot(); !snap.FailOpen || len(snap.Routable) != 1 || !l.g.Health().RoutingFailover {
		t.Errorf("unhealthy function: routable %d, fail open %v, health %+v", len(snap.Routable), snap.FailOpen, l.g.Health())
	}
	stub.res = healthcheck.Result{Healthy: true, Code: 200}
	for i := range 5 {
		if d := l.g.DescribeTargetHealth(TargetKey{ID: "function"})[0].TargetHealth; d.State != StateUnhealthy {
			t.Fatalf("after %d passing checks: %+v", i, d)
		}
		runHealthRound(l.g)
	}
	if d := l.g.DescribeTargetHealth(TargetKey{ID: "function"})[0].TargetHealth; d.State != StateHealthy {
		t.Errorf("after five passing checks: %+v", d)
	}

	// Without an invoker (a build without the integration package), checks fail.
	l.reg.lambda.Store(&lambdaHolder{})
	runHealthRound(l.g)
	runHealthRound(l.g)
	d := l.g.DescribeTargetHealth(TargetKey{ID: "function"})[0].TargetHealth
	if d.State != StateUnhealthy || !strings.Contains(d.Description, "cannot invoke") {
		t.Errorf("without an invoker: %+v", d)
	}
}
