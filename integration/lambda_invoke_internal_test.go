package integration

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// invokeEndpoint is an Invoke API endpoint that answers what the test
// sets: what real Lambda does and the emulator does not (throttling,
// X-Amz-Function-Error), and what tells a signed request from an unsigned
// one.
type invokeEndpoint struct {
	srv    *httptest.Server
	answer atomic.Pointer[func(w http.ResponseWriter)]
	auth   atomic.Pointer[string]
	path   atomic.Pointer[string]
}

func newInvokeEndpoint(t *testing.T) *invokeEndpoint {
	e := &invokeEndpoint{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		auth, path := r.Header.Get("Authorization"), r.URL.Path
		e.auth.Store(&auth)
		e.path.Store(&path)
		(*e.answer.Load())(w)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *invokeEndpoint) set(f func(w http.ResponseWriter)) { e.answer.Store(&f) }

// noAWSConfig keeps the host's AWS configuration out of the SDK's chain.
func noAWSConfig(t *testing.T) {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func testInvoker(t *testing.T, cfg targetgroup.LambdaConfig) *lambdaInvoker {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = caddy.Duration(5 * time.Second)
	}
	inv, err := newLambdaInvoker(caddy.Context{Context: context.Background()}, cfg, "us-east-1")
	if err != nil {
		t.Fatal(err)
	}
	li := inv.(*lambdaInvoker)
	t.Cleanup(li.Close)
	return li
}

func TestLambdaInvokeAPI(t *testing.T) {
	noAWSConfig(t)
	e := newInvokeEndpoint(t)
	ok := func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{"statusCode":200,"body":"ok"}`) }

	t.Run("unsigned without credentials", func(t *testing.T) {
		li := testInvoker(t, targetgroup.LambdaConfig{Endpoint: e.srv.URL})
		e.set(ok)
		payload, fe, fail := li.invoke(context.Background(), "function", []byte(`{}`), li.timeout)
		if fail != nil || fe != "" || string(payload) != `{"statusCode":200,"body":"ok"}` {
			t.Fatalf("invoke: %q %q %v", payload, fe, fail)
		}
		if auth := *e.auth.Load(); auth != "" {
			t.Errorf("Authorization %q, want none", auth)
		}
		if path := *e.path.Load(); path != "/2015-03-31/functions/function/invocations" {
			t.Errorf("path %s", path)
		}
	})

	t.Run("signed with credentials", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
		li := testInvoker(t, targetgroup.LambdaConfig{Endpoint: e.srv.URL})
		e.set(ok)
		fn := "arn:aws:lambda:eu-west-3:123456789012:function:f"
		if _, _, fail := li.invoke(context.Background(), fn, []byte(`{}`), li.timeout); fail != nil {
			t.Fatal(fail)
		}
		if auth := *e.auth.Load(); !strings.Contains(auth, "Credential=AKIDEXAMPLE/") || !strings.Contains(auth, "/eu-west-3/lambda/aws4_request") {
			t.Errorf("Authorization %q, want a SigV4 signature for lambda in the ARN's region", auth)
		}
	})

	li := testInvoker(t, targetgroup.LambdaConfig{Endpoint: e.srv.URL, Timeout: caddy.Duration(time.Second)})
	t.Run("throttled", func(t *testing.T) {
		e.set(func(w http.ResponseWriter) {
			w.Header().Set("X-Amzn-ErrorType", "TooManyRequestsException")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"message":"Rate Exceeded.","Reason":"ReservedFunctionConcurrentInvocationLimitExceeded"}`)
		})
		_, _, fail := li.invoke(context.Background(), "function", []byte(`{}`), li.timeout)
		if fail == nil || fail.status != http.StatusServiceUnavailable || fail.reason != reasonThrottled {
			t.Errorf("throttled: %v", fail)
		}
	})

	t.Run("X-Amz-Function-Error", func(t *testing.T) {
		e.set(func(w http.ResponseWriter) {
			w.Header().Set("X-Amz-Function-Error", "Unhandled")
			_, _ = io.WriteString(w, `{"errorMessage":"boom","errorType":"Error"}`)
		})
		payload, fe, fail := li.invoke(context.Background(), "function", []byte(`{}`), li.timeout)
		if fail != nil || fe != "Unhandled" {
			t.Fatalf("invoke: %q %v", fe, fail)
		}
		if _, fail := parseAnswer(payload, fe, albLambdaLimit, false); fail == nil || fail.status != http.StatusBadGateway || !strings.Contains(fail.detail, "Unhandled: Error: boom") {
			t.Errorf("function error: %v", fail)
		}
	})

	t.Run("the emulator's crashed function", func(t *testing.T) {
		// A panic or an exit: the emulator answers 502 with the error.
		e.set(func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, `{"errorType":"Runtime.ExitError","errorMessage":"RequestId: 1 Error: Runtime exited with error: exit status 3"}`)
		})
		payload, fe, fail := li.invoke(context.Background(), "function", []byte(`{}`), li.timeout)
		if fail != nil || fe != "Unhandled" {
			t.Fatalf("invoke: %q %v", fe, fail)
		}
		if _, fail := parseAnswer(payload, fe, albLambdaLimit, false); fail == nil || fail.status != http.StatusBadGateway || fail.reason != reasonFunctionError || !strings.Contains(fail.detail, "Runtime.ExitError: RequestId: 1 Error: Runtime exited") {
			t.Errorf("crashed function: %v", fail)
		}
		// Lambda's own 502s are errors of the Invoke API.
		e.set(func(w http.ResponseWriter) {
			w.Header().Set("X-Amzn-ErrorType", "ENILimitReachedException")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, `{"Type":"Server","message":"ENI limit reached"}`)
		})
		if _, _, fail := li.invoke(context.Background(), "function", []byte(`{}`), li.timeout); fail == nil || fail.status != http.StatusBadGateway || fail.reason != reasonInvokeFailed || !strings.Contains(fail.detail, "ENILimitReachedException") {
			t.Errorf("ENILimitReachedException: %v", fail)
		}
	})

	t.Run("function not found", func(t *testing.T) {
		e.set(func(w http.ResponseWriter) {
			w.Header().Set("X-Amzn-ErrorType", "ResourceNotFoundException")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"Type":"User","message":"Function not found: f"}`)
		})
		_, _, fail := li.invoke(context.Background(), "f", []byte(`{}`), li.timeout)
		if fail == nil || fail.status != http.StatusBadGateway || !strings.Contains(fail.detail, "ResourceNotFoundException") {
			t.Errorf("not found: %v", fail)
		}
	})

	t.Run("past lambda.timeout", func(t *testing.T) {
		release := make(chan struct{})
		e.set(func(w http.ResponseWriter) { <-release; ok(w) })
		// The function answers only once invoke has returned: whatever
		// invoke returns, it did not wait for the answer.
		_, _, fail := li.invoke(context.Background(), "function", []byte(`{}`), li.timeout)
		close(release)
		if fail == nil || fail.status != http.StatusGatewayTimeout {
			t.Errorf("past the timeout: %v", fail)
		}
	})
}

// With max_concurrent_invocations 1, the second invocation waits for the
// first one's answer, even when the first one's caller gave up: the
// function is still running at the endpoint.
func TestLambdaInvocationSlots(t *testing.T) {
	noAWSConfig(t)
	e := newInvokeEndpoint(t)
	var inFlight, most atomic.Int32
	release := make(chan struct{})
	e.set(func(w http.ResponseWriter) {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		inFlight.Add(-1)
		_, _ = io.WriteString(w, `{"statusCode":200}`)
	})
	li := testInvoker(t, targetgroup.LambdaConfig{Endpoint: e.srv.URL, MaxConcurrentInvocations: 1})

	// The first caller gives up at once; its invocation holds the slot.
	if _, _, fail := li.invoke(context.Background(), "function", nil, 50*time.Millisecond); fail == nil || fail.status != http.StatusGatewayTimeout {
		t.Fatalf("first: %v", fail)
	}
	// A second caller that waits no longer than the slot is busy gets
	// nowhere, without an invocation.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, _, fail := li.invoke(ctx, "function", nil, time.Second)
	cancel()
	if fail == nil || fail.detail != reasonQueueAbandoned {
		t.Fatalf("queued past its deadline: %v", fail)
	}
	done := make(chan *lambdaFailure, 1)
	go func() {
		_, _, fail := li.invoke(context.Background(), "function", nil, 5*time.Second)
		done <- fail
	}()
	close(release)
	if fail := <-done; fail != nil {
		t.Fatalf("third: %v", fail)
	}
	if most.Load() != 1 {
		t.Errorf("%d invocations at once, want 1", most.Load())
	}
	// The 504'd invocation gave its slot back once it ended, as did the
	// others: none is left counted.
	until(t, "every slot given back", func() bool { return li.slots.inFlight.Load() == 0 && li.slots.queued.Load() == 0 })
}

// until polls cond until it holds, failing the test after 10s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A reload that changes max_concurrent_invocations keeps the bound: the
// previous config's invocations still in flight count against the new
// limit, whichever way it changed.
func TestLambdaInvocationSlotsAcrossLimits(t *testing.T) {
	noAWSConfig(t)
	e := newInvokeEndpoint(t)
	var inFlight atomic.Int32
	gate := make(chan struct{})
	seen := make(chan int32, 10) // the in-flight count each invocation found
	e.set(func(w http.ResponseWriter) {
		seen <- inFlight.Add(1)
		<-gate
		inFlight.Add(-1)
		_, _ = io.WriteString(w, `{"statusCode":200}`)
	})
	before := testInvoker(t, targetgroup.LambdaConfig{Endpoint: e.srv.URL, MaxConcurrentInvocations: 2})
	after := testInvoker(t, targetgroup.LambdaConfig{Endpoint: e.srv.URL + "/", MaxConcurrentInvocations: 1})
	if before.slots != after.slots {
		t.Fatal("two configs of one endpoint count their invocations apart")
	}
	invoke := func(li *lambdaInvoker, done chan *lambdaFailure) {
		go func() {
			_, _, fail := li.invoke(context.Background(), "function", nil, 10*time.Second)
			done <- fail
		}()
	}
	olds, next := make(chan *lambdaFailure, 2), make(chan *lambdaFailure, 1)
	invoke(before, olds)
	invoke(before, olds)
	<-seen
	<-seen
	invoke(after, next)
	until(t, "the new config's invocation to queue", func() bool { return after.slots.queued.Load() == 1 })
	gate <- struct{}{}
	if fail := <-olds; fail != nil {
		t.Fatal(fail)
	}
	// One of the old ones is still in flight: the new limit of 1 is met.
	if q, n := after.slots.queued.Load(), inFlight.Load(); q != 1 || n != 1 {
		t.Fatalf("after one old invocation ended: %d queued, %d in flight; want 1 and 1", q, n)
	}
	gate <- struct{}{}
	if n := <-seen; n != 1 {
		t.Errorf("the new config's invocation started with %d in flight, want alone", n)
	}
	gate <- struct{}{}
	for _, c := range []chan *lambdaFailure{olds, next} {
		if fail := <-c; fail != nil {
			t.Error(fail)
		}
	}
	until(t, "every slot given back", func() bool { return after.slots.inFlight.Load() == 0 })
}

// The queue: in order, a waiter that gives up leaves it (and lets the
// next in), and every slot taken is given back once.
func TestLambdaEndpointSlots(t *testing.T) {
	s := &endpointSlots{}
	bg := context.Background()
	for range 2 {
		if err := s.acquire(bg, 2); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(bg)
	lowDone := make(chan error, 1)
	go func() { lowDone <- s.acquire(ctx, 1) }()
	until(t, "the limit-1 waiter to queue", func() bool { return s.queued.Load() == 1 })
	highDone := make(chan error, 1)
	go func() { highDone <- s.acquire(bg, 3) }()
	until(t, "the limit-3 waiter to queue behind it", func() bool { return s.queued.Load() == 2 })
	cancel()
	if err := <-lowDone; err == nil {
		t.Fatal("a waiter whose context ended got a slot")
	}
	if err := <-highDone; err != nil {
		t.Fatal(err)
	}
	if n, q := s.inFlight.Load(), s.queued.Load(); n != 3 || q != 0 || len(s.waiters) != 0 {
		t.Fatalf("%d in flight, %d queued (%d waiters), want 3 and 0", n, q, len(s.waiters))
	}
	// Unlimited invocations are counted, and wait for nobody.
	if err := s.acquire(bg, 0); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		s.release()
	}
	if n := s.inFlight.Load(); n != 0 {
		t.Errorf("%d in flight after every release", n)
	}
	// Many at once under a limit never exceed it.
	var most, cur atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if err := s.acquire(bg, 3); err != nil {
				t.Error(err)
				return
			}
			n := cur.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			cur.Add(-1)
			s.release()
		})
	}
	wg.Wait()
	if m := most.Load(); m > 3 || s.inFlight.Load() != 0 || s.queued.Load() != 0 {
		t.Errorf("most at once %d (limit 3); after: %d in flight, %d queued", m, s.inFlight.Load(), s.queued.Load())
	}
}

// panicClient is an HTTP client whose every request panics.
type panicClient struct{}

func (panicClient) Do(*http.Request) (*http.Response, error) { panic("transport exploded") }

// A panic inside the Invoke call is the request's 502, not Caddy's crash,
// and gives its slot back.
func TestLambdaInvokePanic(t *testing.T) {
	noAWSConfig(t)
	li := testInvoker(t, targetgroup.LambdaConfig{Endpoint: "http://127.0.0.1:9", MaxConcurrentInvocations: 1})
	li.aws.HTTPClient = panicClient{}
	for range 2 {
		_, _, fail := li.invoke(context.Background(), "function", nil, 5*time.Second)
		if fail == nil || fail.status != http.StatusBadGateway || !strings.Contains(fail.detail, "transport exploded") {
			t.Fatalf("a panicking Invoke: %v", fail)
		}
	}
	until(t, "the slot given back", func() bool { return li.slots.inFlight.Load() == 0 })
}

// Close, when a config is unloaded, closes the invoker's idle connections.
func TestLambdaInvokerClose(t *testing.T) {
	noAWSConfig(t)
	var closed atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"statusCode":200}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	li := testInvoker(t, targetgroup.LambdaConfig{Endpoint: srv.URL})
	if _, _, fail := li.invoke(context.Background(), "function", nil, li.timeout); fail != nil {
		t.Fatal(fail)
	}
	if n := closed.Load(); n != 0 {
		t.Fatalf("%d connections closed before Close", n)
	}
	li.Close()
	until(t, "the idle connection closed", func() bool { return closed.Load() == 1 })
}

// A broken AWS configuration (a profile that does not exist) fails the
// invocations, not the config load of every app, lambda groups or none.
func TestLambdaBrokenAWSConfig(t *testing.T) {
	noAWSConfig(t)
	t.Setenv("AWS_PROFILE", "no-such-profile")
	li := testInvoker(t, targetgroup.LambdaConfig{Endpoint: "http://127.0.0.1:9"})
	_, _, fail := li.invoke(context.Background(), "function", nil, li.timeout)
	if fail == nil || fail.status != http.StatusBadGateway || !strings.Contains(fail.detail, "no-such-profile") {
		t.Errorf("invoking with a broken AWS configuration: %v", fail)
	}
}
