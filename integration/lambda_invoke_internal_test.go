package integration

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
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
		if _, fail := parseAnswer(payload, fe, albLambdaLimit); fail == nil || fail.status != http.StatusBadGateway || !strings.Contains(fail.detail, "Unhandled: Error: boom") {
			t.Errorf("function error: %v", fail)
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
		start := time.Now()
		_, _, fail := li.invoke(context.Background(), "function", []byte(`{}`), li.timeout)
		close(release)
		if fail == nil || fail.status != http.StatusGatewayTimeout || time.Since(start) > 3*time.Second {
			t.Errorf("past the timeout: %v after %s", fail, time.Since(start))
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
}
