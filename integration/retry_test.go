package integration_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// retryConfig checks rarely (the first check still runs at once), so a
// target that goes away stays healthy in the group while requests reach it.
// The handler has the retries given, if any.
func retryConfig(retries ...int) string {
	h := tgHandler("web")
	if len(retries) > 0 {
		h["retries"] = retries[0]
	}
	return caddyConfig{
		groups: map[string]any{"web": `{"health_check": {"interval": "300s", "timeout": "2s"}}`},
		routes: []any{route("", h)},
	}.json()
}

func retryCaddy(t *testing.T, retries ...int) *instance {
	return startCaddy(t, retryConfig(retries...))
}

func TestHandlerRetriesTargetThatRefusesConnections(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	in := retryCaddy(t)
	in.register("web", a.port(), b.port())
	keyA, keyB := fmt.Sprintf("127.0.0.1:%d", a.port()), fmt.Sprintf("127.0.0.1:%d", b.port())
	in.waitStates("web", map[string]string{keyA: "healthy", keyB: "healthy"})

	b.srv.Close() // gone between two active checks: still healthy in the group
	for i := range 10 {
		if code, body := in.get("/"); code != http.StatusOK || body != "a" {
			t.Fatalf("GET %d: %d %q, want 200 from a (the request is retried on another target)", i, code, body)
		}
		// Nothing was sent to b, so a POST with a body is retried too.
		resp, err := http.Post("http://"+in.http+"/", "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "a" {
			t.Fatalf("POST %d: %d %q, want 200 from a", i, resp.StatusCode, body)
		}
	}
	if st := in.states("web")[keyB]; st != "healthy" {
		t.Fatalf("b is %s; without passive health only the active check may change it", st)
	}
}

func TestHandlerRetriesOff(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	in := retryCaddy(t, -1)
	in.register("web", a.port(), b.port())
	in.waitStates("web", map[string]string{fmt.Sprintf("127.0.0.1:%d", a.port()): "healthy", fmt.Sprintf("127.0.0.1:%d", b.port()): "healthy"})
	b.srv.Close()
	failed := 0
	for range 10 {
		if code, _ := in.get("/"); code == http.StatusBadGateway {
			failed++
		}
	}
	// Round robin over two targets: every other request goes to b.
	if failed != 5 {
		t.Fatalf("%d of 10 requests failed with retries off, want 5", failed)
	}
}

// A request that reached a target is never sent a second time, even a GET:
// the target may have acted on it.
func TestHandlerDoesNotResendRequestThatReachedTarget(t *testing.T) {
	var hits atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.UserAgent(), "Caddy-TargetGroup-HealthChecker") {
			return
		}
		hits.Add(1)
		// Close the connection without an answer.
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	in := retryCaddy(t, 3)
	in.register("web", port)
	in.waitStates("web", map[string]string{fmt.Sprintf("127.0.0.1:%d", port): "healthy"})
	for i := range 5 {
		if code, _ := in.get("/"); code != http.StatusBadGateway {
			t.Fatalf("GET %d: %d, want 502", i, code)
		}
	}
	if n := hits.Load(); n != 5 {
		t.Fatalf("the target saw %d requests for 5 sent, want 5 (no resend)", n)
	}
}

func TestHandlerRetriesOutOfRange(t *testing.T) {
	in := newInstance(t)
	for _, r := range []int{-2, 11} {
		err := in.load(retryConfig(r))
		if err == nil || !strings.Contains(err.Error(), "retries must be -1 (off) or 0-10") {
			t.Fatalf("retries %d: got %v", r, err)
		}
	}
}
