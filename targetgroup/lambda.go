package targetgroup

import (
	"context"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-targetgroup/caddy-targetgroup/healthcheck"
)

// LambdaConfig is the app's `lambda` field: how the functions of lambda
// groups are invoked (the Lambda Invoke API, with the AWS SDK's default
// credential chain).
type LambdaConfig struct {
	// The base URL of an Invoke-compatible endpoint, such as the AWS Lambda
	// Runtime Interface Emulator's (http://127.0.0.1:9000). Empty: AWS's
	// regional endpoint. With an endpoint and no AWS credentials anywhere,
	// invocations are sent unsigned, which is what an emulator accepts.
	Endpoint string `json:"endpoint,omitempty"`

	// The region invocations are signed for and sent to. Default: the
	// region of the function's ARN, then AWS_REGION (or the shared
	// config's), then the app's `region`.
	Region string `json:"region,omitempty"`

	// How many invocations may be in flight at once per endpoint; the
	// others wait, in order, for as long as their request does. 0
	// (default): no limit. The emulator runs one invocation at a time and
	// crashes on a second: give it 1.
	MaxConcurrentInvocations int `json:"max_concurrent_invocations,omitempty"`

	// How long a request waits for its invocation's answer before it is
	// answered 504 (the invocation itself runs on, as it would at AWS).
	// 1s-15m, default 60s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// DefaultLambdaTimeout is LambdaConfig.Timeout's default.
const DefaultLambdaTimeout = 60 * time.Second

// maxLambdaTimeout is Lambda's own longest function timeout.
const maxLambdaTimeout = 15 * time.Minute

// withDefaults fills in the defaults and checks every field.
func (c LambdaConfig) withDefaults() (LambdaConfig, error) {
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return c, fieldErr("lambda.endpoint", "%q must be an http:// or https:// base URL, such as http://127.0.0.1:9000", c.Endpoint)
		}
	}
	if c.Region != "" && !validRegion(c.Region) {
		return c, fieldErr("lambda.region", "%q must be 1-32 characters: a-z, 0-9 or '-' (such as us-east-1)", c.Region)
	}
	if c.MaxConcurrentInvocations < 0 || c.MaxConcurrentInvocations > 100000 {
		return c, fieldErr("lambda.max_concurrent_invocations", "%d must be 0 (no limit) or within 1-100000", c.MaxConcurrentInvocations)
	}
	if c.Timeout == 0 {
		c.Timeout = caddy.Duration(DefaultLambdaTimeout)
	}
	if d := time.Duration(c.Timeout); d < time.Second || d > maxLambdaTimeout {
		return c, fieldErr("lambda.timeout", "%s is outside 1s-15m", d)
	}
	return c, nil
}

// Validate checks every field, as a config load does.
func (c LambdaConfig) Validate() error {
	_, err := c.withDefaults()
	return err
}

func validRegion(r string) bool {
	return len(r) >= 1 && len(r) <= 32 && !strings.ContainsFunc(r, func(c rune) bool { return !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') })
}

// LambdaInvoker is what health checks of lambda groups call: this package
// knows nothing of the AWS SDK, so the integration package provides it
// (RegisterLambdaInvoker), and its request path uses the same invoker.
type LambdaInvoker interface {
	// CheckHealth sends function the health-check event of g under spec
	// and matches the statusCode of its answer with spec's matcher. ctx
	// carries the check's timeout.
	CheckHealth(ctx context.Context, g *Group, function string, spec *Spec) healthcheck.Result
}

// LambdaInvokerFactory makes the invoker of a loaded app from its (checked,
// defaulted) lambda field and its region.
type LambdaInvokerFactory func(ctx caddy.Context, cfg LambdaConfig, appRegion string) (LambdaInvoker, error)

var lambdaFactory atomic.Pointer[LambdaInvokerFactory]

// RegisterLambdaInvoker sets the factory every app load makes its invoker
// with. The integration package calls it from init.
func RegisterLambdaInvoker(f LambdaInvokerFactory) { lambdaFactory.Store(&f) }

// provisionLambda checks the app's lambda field and makes its invoker.
func (a *App) provisionLambda(ctx caddy.Context) error {
	var cfg LambdaConfig
	if a.Lambda != nil {
		cfg = *a.Lambda
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	a.lambdaCfg = cfg
	if f := lambdaFactory.Load(); f != nil {
		inv, err := (*f)(ctx, cfg, a.Region)
		if err != nil {
			return fieldErr("lambda", "%v", err)
		}
		a.lambda = inv
	}
	return nil
}

// LambdaConfig returns the app's lambda field with its defaults.
func (a *App) LambdaConfig() LambdaConfig { return a.lambdaCfg }

// LambdaInvoker returns the invoker this app load made, nil when no
// factory is registered.
func (a *App) LambdaInvoker() LambdaInvoker { return a.lambda }

type lambdaHolder struct{ inv LambdaInvoker }

// lambdaInvoker is the invoker of the config in force.
func (r *Registry) lambdaInvoker() LambdaInvoker {
	if h := r.lambda.Load(); h != nil {
		return h.inv
	}
	return nil
}

// checkLambda health-checks a lambda target through the invoker in force.
func (g *Group) checkLambda(ctx context.Context, t *Target, spec *Spec) {
	res := healthcheck.Result{Code: -1, Reason: ReasonFailedHealthChecks, Description: "this Caddy cannot invoke Lambda functions (the integration package is not built in)"}
	if inv := g.reg.lambdaInvoker(); inv != nil {
		cctx, cancel := context.WithTimeout(ctx, spec.HealthCheck.Probe.Timeout)
		res = inv.CheckHealth(cctx, g, t.key.ID, spec)
		cancel()
	}
	if ctx.Err() != nil {
		return // the scheduler stopped: a cancelled check says nothing about the function
	}
	t.metrics.checked(res.Healthy)
	g.observe(t, spec, res, netip.Addr{}, nil)
}
