package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
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
	// slots counts the invocations in flight at the endpoint, limit
	// bounds them (max_concurrent_invocations; 0: no bound).
	slots *endpointSlots
	limit int
	// transport is the one invocations go through, once the client is
	// made: Close lets go of its idle connections.
	transport atomic.Pointer[http.Transport]

	// client is made at the first invocation, which is when looking for
	// credentials is worth its cost (it may ask an instance's metadata
	// service): a config load, or `caddy validate`, never waits for it.
	setup  sync.Once
	client *lambda.Client
	// awsErr is why the SDK's configuration could not be loaded: every
	// invocation fails with it (a 502), rather than every config load,
	// lambda groups or none, failing on a broken AWS_PROFILE.
	awsErr error
}

// invocationSlots counts the invocations in flight by endpoint, shared by
// every config load: invocations of the previous config still running
// count against the next one's limit, whatever either limit is, which is
// what keeps a single-flight emulator alive across reloads.
var invocationSlots struct {
	mu    sync.Mutex
	pools map[string]*endpointSlots
}

func slotsFor(endpoint string) *endpointSlots {
	invocationSlots.mu.Lock()
	defer invocationSlots.mu.Unlock()
	if invocationSlots.pools == nil {
		invocationSlots.pools = map[string]*endpointSlots{}
	}
	s := invocationSlots.pools[endpoint]
	if s == nil {
		s = &endpointSlots{}
		invocationSlots.pools[endpoint] = s
	}
	return s
}

// endpointSlots are the invocations in flight at one endpoint and those
// waiting, in order, for fewer than their config's limit to be in flight.
// Taking and giving back a slot are atomic operations; the mutex guards
// the queue, which only invocations over a limit join.
type endpointSlots struct {
	inFlight atomic.Int64
	queued   atomic.Int64 // len(waiters), read without mu
	mu       sync.Mutex
	waiters  []*slotWaiter
}

type slotWaiter struct {
	limit int64
	ready chan struct{} // closed once the slot is the waiter's
}

// take takes a slot if fewer than limit are in flight (0: no limit).
func (s *endpointSlots) take(limit int64) bool {
	for {
		n := s.inFlight.Load()
		if limit > 0 && n >= limit {
			return false
		}
		if s.inFlight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// acquire takes a slot under limit (0: no limit, the invocation is only
// counted), waiting behind those already waiting for as long as ctx lets
// it. Every nil return is matched by one release.
func (s *endpointSlots) acquire(ctx context.Context, limit int) error {
	l := int64(limit)
	if l == 0 {
		s.inFlight.Add(1)
		return nil
	}
	if s.queued.Load() == 0 && s.take(l) {
		return nil
	}
	w := &slotWaiter{limit: l, ready: make(chan struct{})}
	s.mu.Lock()
	s.waiters = append(s.waiters, w)
	s.queued.Add(1)
	s.grantLocked()
	s.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-w.ready:
		// Granted as ctx ended: nothing will use it.
		s.inFlight.Add(-1)
	default:
		for i, o := range s.waiters {
			if o == w {
				s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
				s.queued.Add(-1)
				break
			}
		}
	}
	// w may have been at the head, before waiters of a higher limit.
	s.grantLocked()
	return ctx.Err()
}

// release gives a slot back and hands it to the first waiter it fits.
// (A waiter counts itself queued before it looks at inFlight, and release
// looks at queued after it lowers inFlight: one of them sees the other.)
func (s *endpointSlots) release() {
	s.inFlight.Add(-1)
	if s.queued.Load() > 0 {
		s.mu.Lock()
		s.grantLocked()
		s.mu.Unlock()
	}
}

// grantLocked hands slots to the waiters in order while the first one's
// limit lets it in. Called with mu held.
func (s *endpointSlots) grantLocked() {
	for len(s.waiters) > 0 {
		w := s.waiters[0]
		if !s.take(w.limit) {
			return
		}
		s.waiters[0] = nil
		s.waiters = s.waiters[1:]
		s.queued.Add(-1)
		close(w.ready)
	}
}

func newLambdaInvoker(ctx caddy.Context, cfg targetgroup.LambdaConfig, appRegion string) (targetgroup.LambdaInvoker, error) {
	awsCfg, err := config.LoadDefaultConfig(ctx)
	endpoint := strings.TrimSuffix(cfg.Endpoint, "/")
	key := endpoint
	if key == "" {
		key = "aws"
	}
	li := &lambdaInvoker{
		cfg:       cfg,
		appRegion: appRegion,
		envRegion: awsCfg.Region,
		aws:       awsCfg,
		logger:    ctx.Logger().Named("lambda"),
		timeout:   time.Duration(cfg.Timeout),
		slots:     slotsFor(key),
		limit:     cfg.MaxConcurrentInvocations,
	}
	if err != nil {
		li.awsErr = fmt.Errorf("loading the AWS SDK's configuration: %v", err)
		li.logger.Warn("lambda target groups cannot invoke their functions", zap.Error(li.awsErr))
	}
	return li, nil
}

// Close lets go of idle connections when the config is unloaded.
func (li *lambdaInvoker) Close() {
	if tr := li.transport.Load(); tr != nil {
		tr.CloseIdleConnections()
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
			// The SDK's client copies its transport whenever it is
			// used: this one is made of the same settings (a custom CA
			// bundle included), and kept for Close.
			if b, ok := o.HTTPClient.(*awshttp.BuildableClient); ok {
				tr := b.GetTransport()
				li.transport.Store(tr)
				o.HTTPClient = &http.Client{Transport: tr, Timeout: b.GetTimeout(),
					CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			}
			if li.cfg.Endpoint != "" {
				o.BaseEndpoint = aws.String(li.cfg.Endpoint)
				o.HTTPClient = emulatorErrors{o.HTTPClient}
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

// emulatorErrors makes the emulator's answer for a function that crashed
// (panicked, or its process exited) Lambda's: the emulator answers HTTP
// 502 with the function error as the body, where Lambda answers 200 with
// X-Amz-Function-Error: Unhandled. Without this the SDK makes it an
// UnknownError and the function's errorType and errorMessage are lost
// from the log. Lambda's own errors carry X-Amzn-ErrorType and are left
// alone.
type emulatorErrors struct{ next aws.HTTPClient }

func (c emulatorErrors) Do(r *http.Request) (*http.Response, error) {
	resp, err := c.next.Do(r)
	if err != nil || resp.StatusCode < 500 || resp.Header.Get("X-Amzn-ErrorType") != "" {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, latticeLambdaLimit+1))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var fe struct {
		ErrorMessage *string `json:"errorMessage"`
		ErrorType    *string `json:"errorType"`
	}
	if json.Unmarshal(body, &fe) == nil && (fe.ErrorMessage != nil || fe.ErrorType != nil) {
		resp.StatusCode, resp.Status = http.StatusOK, "200 OK"
		resp.Header.Set("X-Amz-Function-Error", "Unhandled")
	}
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	return resp, nil
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
	if li.awsErr != nil {
		return nil, "", &lambdaFailure{status: http.StatusBadGateway, reason: reasonInvokeFailed, detail: li.awsErr.Error()}
	}
	client := li.lambdaClient(ctx)
	region := li.region(function)
	if err := li.slots.acquire(ctx, li.limit); err != nil {
		return nil, "", ctxFailure(ctx, reasonQueueAbandoned)
	}
	done := make(chan invokeResult, 1)
	go func() {
		var res invokeResult
		defer func() {
			// The slot is given back however the call ends: a panic
			// here would otherwise take Caddy down, not just this
			// request.
			if p := recover(); p != nil {
				res = invokeResult{err: fmt.Errorf("the Invoke call panicked: %v", p)}
			}
			li.slots.release()
			done <- res
		}()
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), maxInvocation)
		defer cancel()
		res.out, res.err = client.Invoke(bctx, &lambda.InvokeInput{FunctionName: aws.String(function), Payload: event},
			func(o *lambda.Options) { o.Region = region })
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
		ans, fail = parseAnswer(payload, fe, lambdaLimit(req.Version), req.MultiValue && req.Version == eventALB)
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
