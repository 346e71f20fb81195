package integration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/smithy-go"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-targetgroup/caddy-targetgroup/healthcheck"
	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

func init() {
	targetgroup.RegisterLambdaInvoker(newLambdaInvoker)
}

// lambdaInvoker invokes the functions of lambda groups through the Lambda
// Invoke API, for requests (the target_group handler) and health checks
// alike. One is made per config load.
type lambdaInvoker struct {
	cfg       targetgroup.LambdaConfig
	appRegion string
	// envRegion is the region of the SDK's own configuration (AWS_REGION,
	// the shared config file); "" when it has none.
	envRegion string
	aws       aws.Config
	logger    *zap.Logger
	timeout   time.Duration
	// slots bounds the invocations in flight at the endpoint; nil: no bound.
	slots chan struct{}
	http  *awshttp.BuildableClient

	// client is made at the first invocation, which is when looking for
	// credentials is worth its cost (it may ask an instance's metadata
	// service): a config load, or `caddy validate`, never waits for it.
	setup  sync.Once
	client *lambda.Client
}

// invocationSlots are the bounds of the endpoints by endpoint, shared by
// every config load: invocations of the previous config still running
// count against the next one's, which is what keeps a single-flight
// emulator alive across reloads.
var invocationSlots struct {
	mu    sync.Mutex
	pools map[string]*slotPool
}

type slotPool struct {
	n  int
	ch chan struct{}
}

func slotsFor(endpoint string, n int) chan struct{} {
	if n == 0 {
		return nil
	}
	invocationSlots.mu.Lock()
	defer invocationSlots.mu.Unlock()
	if invocationSlots.pools == nil {
		invocationSlots.pools = map[string]*slotPool{}
	}
	p := invocationSlots.pools[endpoint]
	if p == nil || p.n != n {
		p = &slotPool{n: n, ch: make(chan struct{}, n)}
		invocationSlots.pools[endpoint] = p
	}
	return p.ch
}

func newLambdaInvoker(ctx caddy.Context, cfg targetgroup.LambdaConfig, appRegion string) (targetgroup.LambdaInvoker, error) {
	hc := awshttp.NewBuildableClient()
	awsCfg, err := config.LoadDefaultConfig(ctx, config.WithHTTPClient(hc))
	if err != nil {
		return nil, fmt.Errorf("loading the AWS SDK's configuration: %v", err)
	}
	endpoint := strings.TrimSuffix(cfg.Endpoint, "/")
	key := endpoint
	if key == "" {
		key = "aws"
	}
	return &lambdaInvoker{
		cfg:       cfg,
		appRegion: appRegion,
		envRegion: awsCfg.Region,
		aws:       awsCfg,
		logger:    ctx.Logger().Named("lambda"),
		timeout:   time.Duration(cfg.Timeout),
		slots:     slotsFor(key, cfg.MaxConcurrentInvocations),
		http:      hc,
	}, nil
}

// Close lets go of idle connections when the config is unloaded.
func (li *lambdaInvoker) Close() {
	if c := li.http.GetTransport(); c != nil {
		c.CloseIdleConnections()
	}
}

// lambdaClient makes the client on first use. With an endpoint set (an
// emulator) and no credentials anywhere, invocations go unsigned rather
// than fail: emulators don't check signatures.
func (li *lambdaInvoker) lambdaClient(ctx context.Context) *lambda.Client {
	li.setup.Do(func() {
		anonymous := false
		if li.cfg.Endpoint != "" {
			err := errors.New("no credential provider")
			if li.aws.Credentials != nil {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				_, err = li.aws.Credentials.Retrieve(cctx)
				cancel()
			}
			if err != nil {
				anonymous = true
				li.logger.Info("no AWS credentials found; invoking the endpoint unsigned", zap.String("endpoint", li.cfg.Endpoint), zap.String("why", err.Error()))
			}
		}
		li.client = lambda.NewFromConfig(li.aws, func(o *lambda.Options) {
			if li.cfg.Endpoint != "" {
				o.BaseEndpoint = aws.String(li.cfg.Endpoint)
			}
			// A load balancer never sends a request twice: the function
			// may have run.
			o.Retryer = aws.NopRetryer{}
			if anonymous {
				o.Credentials = aws.AnonymousCredentials{}
			}
		})
	})
	return li.client
}

// region is where function is invoked: the lambda field's region, else
// the function ARN's, the SDK configuration's, the app's.
func (li *lambdaInvoker) region(function string) string {
	if li.cfg.Region != "" {
		return li.cfg.Region
	}
	if parts := strings.Split(function, ":"); len(parts) >= 7 && parts[0] == "arn" && parts[3] != "" {
		return parts[3]
	}
	if li.envRegion != "" {
		return li.envRegion
	}
	return li.appRegion
}

// maxInvocation bounds an invocation nobody waits for any more: Lambda's
// longest function timeout, and a minute.
const maxInvocation = 16 * time.Minute

type invokeResult struct {
	out *lambda.InvokeOutput
	err error
}

// invoke sends event to function and returns its payload and
// X-Amz-Function-Error, once an invocation slot is free (waiting as long
// as ctx lets it). Past timeout the caller gets a 504, and the invocation
// runs on, holding its slot, until the function answers: it still runs at
// the endpoint, and an emulator crashes on an overlapping one.
func (li *lambdaInvoker) invoke(ctx context.Context, function string, event []byte, timeout time.Duration) ([]byte, string, *lambdaFailure) {
	if li.slots != nil {
		select {
		case li.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, "", ctxFailure(ctx, reasonQueueAbandoned)
		}
	}
	client := li.lambdaClient(ctx)
	done := make(chan invokeResult, 1)
	region := li.region(function)
	go func() {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), maxInvocation)
		defer cancel()
		out, err := client.Invoke(bctx, &lambda.InvokeInput{FunctionName: aws.String(function), Payload: event},
			func(o *lambda.Options) { o.Region = region })
		if li.slots != nil {
			<-li.slots
		}
		done <- invokeResult{out, err}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case res := <-done:
		if res.err != nil {
			return nil, "", invokeFailure(res.err)
		}
		return res.out.Payload, aws.ToString(res.out.FunctionError), nil
	case <-timer.C:
		return nil, "", &lambdaFailure{status: http.StatusGatewayTimeout, reason: reasonInvokeTimeout, detail: fmt.Sprintf("no answer within lambda.timeout %s", timeout)}
	case <-ctx.Done():
		return nil, "", ctxFailure(ctx, reasonClientGone)
	}
}

// ctxFailure is a wait cut short by ctx: its deadline (a health check's
// timeout) is a timeout, a cancellation the client going away.
func ctxFailure(ctx context.Context, reason string) *lambdaFailure {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &lambdaFailure{status: http.StatusGatewayTimeout, reason: reasonInvokeTimeout, detail: reason}
	}
	return &lambdaFailure{status: 499, reason: reasonClientGone, detail: reason}
}

// invokeFailure classifies an error of the Invoke API.
func invokeFailure(err error) *lambdaFailure {
	var throttled *types.TooManyRequestsException
	var resp *awshttp.ResponseError
	var api smithy.APIError
	switch {
	case errors.As(err, &throttled), errors.As(err, &resp) && resp.HTTPStatusCode() == http.StatusTooManyRequests:
		return &lambdaFailure{status: http.StatusServiceUnavailable, reason: reasonThrottled, detail: err.Error()}
	case errors.As(err, &api):
		return &lambdaFailure{status: http.StatusBadGateway, reason: reasonInvokeFailed, detail: api.ErrorCode() + ": " + api.ErrorMessage()}
	}
	return &lambdaFailure{status: http.StatusBadGateway, reason: reasonInvokeFailed, detail: err.Error()}
}

// HealthCheckUserAgent is the user agent of health-check events, ALB's.
const HealthCheckUserAgent = "ELB-HealthChecker/2.0"

// CheckHealth implements targetgroup.LambdaInvoker: a GET of the health
// check's path, in the group's event structure, whose statusCode the
// group's matcher judges.
func (li *lambdaInvoker) CheckHealth(ctx context.Context, g *targetgroup.Group, function string, spec *targetgroup.Spec) healthcheck.Result {
	path, query, _ := strings.Cut(spec.HealthCheck.Probe.Path, "?")
	req := &lambdaRequest{
		Version: spec.Config.LambdaEventStructureVersion, MultiValue: spec.Attributes.LambdaMultiValueHeaders,
		ALBARN: g.ARN(), LatticeARN: g.LatticeARN(), Region: li.appRegion,
		Method: http.MethodGet, Path: path, RawQuery: query,
		Header: http.Header{"User-Agent": {HealthCheckUserAgent}}, Check: true, Now: time.Now(),
	}
	event, err := buildEvent(req)
	if err != nil {
		return healthcheck.Result{Code: -1, Reason: healthcheck.ReasonFailedHealthChecks, Description: err.Error()}
	}
	timeout := spec.HealthCheck.Probe.Timeout
	payload, fe, fail := li.invoke(ctx, function, event, timeout)
	var ans *lambdaAnswer
	if fail == nil {
		ans, fail = parseAnswer(payload, fe, lambdaLimit(req.Version))
	}
	switch {
	case fail != nil && fail.status == http.StatusGatewayTimeout:
		return healthcheck.Result{Code: -1, Reason: healthcheck.ReasonTimeout, Description: "Request timed out"}
	case fail != nil:
		li.logger.Debug("lambda health check failed", zap.String("group", g.Name()), zap.String("function", function), zap.String("reason", fail.reason), zap.String("detail", fail.detail))
		return healthcheck.Result{Code: -1, Reason: healthcheck.ReasonFailedHealthChecks, Description: "Lambda " + fail.Error()}
	case spec.HealthCheck.Probe.Matcher.Match(ans.status):
		return healthcheck.Result{Healthy: true, Code: ans.status}
	}
	return healthcheck.Result{Code: ans.status, Reason: healthcheck.ReasonResponseCodeMismatch, Description: fmt.Sprintf("Health checks failed with these codes: [%d]", ans.status)}
}
