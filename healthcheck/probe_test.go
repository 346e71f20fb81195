package healthcheck

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
)

func mustMatcher(t testing.TB, spec string, grpc bool) Matcher {
	t.Helper()
	m, err := ParseMatcher(spec, grpc)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// addrOf returns the host:port of an httptest server.
func addrOf(ts *httptest.Server) string { return ts.Listener.Addr().String() }

// closedAddr returns an address on which nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func probe(t *testing.T, addr string, spec Spec) Result {
	t.Helper()
	p := NewProber()
	t.Cleanup(p.Close)
	if spec.Timeout == 0 {
		spec.Timeout = 5 * time.Second
	}
	r := p.Probe(context.Background(), "tcp", addr, spec)
	t.Logf("%s %s: %+v", spec.Protocol, spec.ProtocolVersion, r)
	return r
}

func wantHealthy(t *testing.T, r Result, code int) {
	t.Helper()
	if !r.Healthy || r.Code != code || r.Reason != "" {
		t.Fatalf("got %+v, want healthy with code %d", r, code)
	}
}

func wantUnhealthy(t *testing.T, r Result, reason string, code int, desc string) {
	t.Helper()
	if r.Healthy || r.Reason != reason || r.Code != code || !strings.Contains(r.Description, desc) {
		t.Fatalf("got %+v, want %s with code %d and description containing %q", r, reason, code, desc)
	}
}

func TestProbeHTTP(t *testing.T) {
	uas := make(chan string, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			select {
			case uas <- r.Header.Get("User-Agent"):
			default:
			}
			if r.URL.RawQuery != "a=1" {
				http.Error(w, "query lost", http.StatusBadRequest)
			}
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/redirect":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/host":
			if r.Host != "example.test" {
				w.WriteHeader(http.StatusMisdirectedRequest)
			}
		case "/":
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer ts.Close()
	addr := addrOf(ts)
	m200 := mustMatcher(t, "200", false)

	t.Run("pass", func(t *testing.T) {
		wantHealthy(t, probe(t, addr, Spec{Protocol: "HTTP", Path: "/ok?a=1", Matcher: m200}), 200)
		if ua := <-uas; ua != UserAgent {
			t.Fatalf("server saw User-Agent %q", ua)
		}
	})
	t.Run("default path", func(t *testing.T) {
		wantHealthy(t, probe(t, addr, Spec{Protocol: "HTTP", Matcher: mustMatcher(t, "202", false)}), 202)
	})
	t.Run("default matcher", func(t *testing.T) {
		wantHealthy(t, probe(t, addr, Spec{Protocol: "HTTP", Path: "/ok?a=1"}), 200)
	})
	t.Run("mismatch", func(t *testing.T) {
		r := probe(t, addr, Spec{Protocol: "HTTP", Path: "/down", Matcher: m200})
		wantUnhealthy(t, r, ReasonResponseCodeMismatch, 503, "Health checks failed with these codes: [503]")
	})
	t.Run("redirect not followed", func(t *testing.T) {
		r := probe(t, addr, Spec{Protocol: "HTTP", Path: "/redirect", Matcher: m200})
		wantUnhealthy(t, r, ReasonResponseCodeMismatch, 302, "[302]")
		wantHealthy(t, probe(t, addr, Spec{Protocol: "HTTP", Path: "/redirect", Matcher: mustMatcher(t, "200-399", false)}), 302)
	})
	t.Run("host header", func(t *testing.T) {
		wantHealthy(t, probe(t, addr, Spec{Protocol: "HTTP", Path: "/host", Host: "example.test", Matcher: m200}), 200)
	})
	t.Run("refused", func(t *testing.T) {
		r := probe(t, closedAddr(t), Spec{Protocol: "HTTP", Matcher: m200})
		wantUnhealthy(t, r, ReasonFailedHealthChecks, -1, "refused")
	})
	t.Run("unsupported", func(t *testing.T) {
		wantUnhealthy(t, probe(t, addr, Spec{Protocol: "UDP"}), ReasonFailedHealthChecks, -1, "unsupported protocol")
		wantUnhealthy(t, probe(t, addr, Spec{Protocol: "HTTP", ProtocolVersion: "HTTP3"}), ReasonFailedHealthChecks, -1, "unsupported protocol version")
	})
}

func TestProbeHTTPTimeout(t *testing.T) {
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer ts.Close()
	defer close(release)
	r := probe(t, addrOf(ts), Spec{Protocol: "HTTP", Timeout: 100 * time.Millisecond})
	wantUnhealthy(t, r, ReasonTimeout, -1, "timed out")
}

// A check reads at most 64 KiB: an endless body must neither hang the check
// nor turn it into a timeout.
func TestProbeHTTPBigBody(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 32<<10)
		for {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	defer ts.Close()
	wantHealthy(t, probe(t, addrOf(ts), Spec{Protocol: "HTTP", Timeout: 30 * time.Second}), 200)
}

func TestProbeHTTPS(t *testing.T) {
	type seen struct {
		proto int
		sni   string
		host  string
	}
	newServer := func(h2 bool) (*httptest.Server, chan seen) {
		ch := make(chan seen, 1)
		ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ch <- seen{r.ProtoMajor, r.TLS.ServerName, r.Host}
		}))
		ts.EnableHTTP2 = h2
		ts.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected
		ts.StartTLS()                                   // self-signed certificate
		t.Cleanup(ts.Close)
		return ts, ch
	}

	t.Run("HTTP1 self-signed", func(t *testing.T) {
		ts, ch := newServer(false)
		wantHealthy(t, probe(t, addrOf(ts), Spec{Protocol: "HTTPS"}), 200)
		if s := <-ch; s.proto != 1 {
			t.Fatalf("server saw HTTP/%d", s.proto)
		}
	})
	t.Run("HTTP1 on an HTTP2 server stays HTTP1", func(t *testing.T) {
		ts, ch := newServer(true)
		wantHealthy(t, probe(t, addrOf(ts), Spec{Protocol: "HTTPS", ProtocolVersion: "HTTP1"}), 200)
		if s := <-ch; s.proto != 1 {
			t.Fatalf("server saw HTTP/%d", s.proto)
		}
	})
	t.Run("HTTP2 via ALPN", func(t *testing.T) {
		ts, ch := newServer(true)
		wantHealthy(t, probe(t, addrOf(ts), Spec{Protocol: "HTTPS", ProtocolVersion: "HTTP2"}), 200)
		if s := <-ch; s.proto != 2 {
			t.Fatalf("server saw HTTP/%d", s.proto)
		}
	})
	t.Run("SNI and Host", func(t *testing.T) {
		for _, version := range []string{"HTTP1", "HTTP2"} {
			ts, ch := newServer(true)
			wantHealthy(t, probe(t, addrOf(ts), Spec{Protocol: "HTTPS", ProtocolVersion: version, Host: "app.example.test:8443"}), 200)
			if s := <-ch; s.sni != "app.example.test" || s.host != "app.example.test:8443" {
				t.Fatalf("%s: server saw SNI %q, Host %q", version, s.sni, s.host)
			}
		}
	})
	t.Run("TLS failure", func(t *testing.T) {
		ts := httptest.NewServer(http.NotFoundHandler()) // plain HTTP
		defer ts.Close()
		r := probe(t, addrOf(ts), Spec{Protocol: "HTTPS"})
		wantUnhealthy(t, r, ReasonFailedHealthChecks, -1, "")
	})
	t.Run("HTTP2 against an HTTP1-only server", func(t *testing.T) {
		ts, _ := newServer(false)
		r := probe(t, addrOf(ts), Spec{Protocol: "HTTPS", ProtocolVersion: "HTTP2"})
		if r.Healthy {
			t.Fatalf("got %+v, want unhealthy", r)
		}
	})
}

func TestProbeH2C(t *testing.T) {
	protos := make(chan int, 1)
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos <- r.ProtoMajor
	}))
	ts.Config.Protocols = new(http.Protocols)
	ts.Config.Protocols.SetHTTP1(true)
	ts.Config.Protocols.SetUnencryptedHTTP2(true)
	ts.Start()
	defer ts.Close()

	wantHealthy(t, probe(t, addrOf(ts), Spec{Protocol: "HTTP", ProtocolVersion: "HTTP2"}), 200)
	if p := <-protos; p != 2 {
		t.Fatalf("server saw HTTP/%d, want h2c", p)
	}
	wantHealthy(t, probe(t, addrOf(ts), Spec{Protocol: "HTTP", ProtocolVersion: "HTTP1"}), 200)
	if p := <-protos; p != 1 {
		t.Fatalf("server saw HTTP/%d, want HTTP/1.1", p)
	}
}

func TestProbeTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	wantHealthy(t, probe(t, ln.Addr().String(), Spec{Protocol: "TCP"}), -1)
	p := NewProber()
	defer p.Close()
	if r := p.Probe(context.Background(), "tcp4", ln.Addr().String(), Spec{Protocol: "tcp"}); !r.Healthy {
		t.Fatalf("tcp4: %+v", r)
	}
	if r := p.Probe(context.Background(), "tcp6", ln.Addr().String(), Spec{Protocol: "TCP"}); r.Healthy {
		t.Fatalf("tcp6 to an IPv4 address should fail, got %+v", r)
	}
	wantUnhealthy(t, probe(t, closedAddr(t), Spec{Protocol: "TCP"}), ReasonFailedHealthChecks, -1, "connection refused")
}

func TestProbeCancelledIsNotTimeout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := NewProber()
	defer p.Close()
	r := p.Probe(ctx, "tcp", closedAddr(t), Spec{Protocol: "HTTP"})
	wantUnhealthy(t, r, ReasonFailedHealthChecks, -1, "canceled")
}

// grpcServer starts a grpc-go server with the standard health service.
func grpcServer(t *testing.T, opts ...grpc.ServerOption) (string, *health.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	hs := health.NewServer()
	grpc_health_v1.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), hs
}

func TestProbeGRPC(t *testing.T) {
	addr, hs := grpcServer(t)
	m0, m12 := mustMatcher(t, "0", true), mustMatcher(t, "12", true)
	hc := Spec{Protocol: "HTTP", ProtocolVersion: "GRPC", Path: "/grpc.health.v1.Health/Check", Matcher: m0}

	t.Run("health SERVING", func(t *testing.T) {
		hs.SetServingStatus("", grpc_health_v1.HealthCheckResponse_SERVING)
		wantHealthy(t, probe(t, addr, hc), 0)
	})
	t.Run("health NOT_SERVING", func(t *testing.T) {
		hs.SetServingStatus("", grpc_health_v1.HealthCheckResponse_NOT_SERVING)
		defer hs.SetServingStatus("", grpc_health_v1.HealthCheckResponse_SERVING)
		wantUnhealthy(t, probe(t, addr, hc), ReasonFailedHealthChecks, 0, "NOT_SERVING")
	})
	t.Run("default method is unimplemented", func(t *testing.T) {
		spec := Spec{Protocol: "HTTP", ProtocolVersion: "GRPC", Matcher: m12}
		wantHealthy(t, probe(t, addr, spec), 12)
		spec.Matcher = Matcher{} // the default is 12 as well
		wantHealthy(t, probe(t, addr, spec), 12)
		spec.Matcher = m0
		wantUnhealthy(t, probe(t, addr, spec), ReasonResponseCodeMismatch, 12, "[12]")
	})
	t.Run("no server", func(t *testing.T) {
		spec := Spec{Protocol: "HTTP", ProtocolVersion: "GRPC", Matcher: mustMatcher(t, "0-99", true)}
		wantUnhealthy(t, probe(t, closedAddr(t), spec), ReasonFailedHealthChecks, -1, "refused")
	})
	t.Run("not a gRPC server", func(t *testing.T) {
		ts := httptest.NewServer(http.NotFoundHandler())
		defer ts.Close()
		spec := Spec{Protocol: "HTTP", ProtocolVersion: "GRPC", Matcher: mustMatcher(t, "0-99", true)}
		r := probe(t, addrOf(ts), spec)
		if r.Healthy {
			t.Fatalf("got %+v, want unhealthy", r)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		// A listener that never completes the HTTP/2 handshake.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		spec := hc
		spec.Timeout = 100 * time.Millisecond
		wantUnhealthy(t, probe(t, ln.Addr().String(), spec), ReasonTimeout, -1, "timed out")
	})
}

func TestProbeGRPCTLS(t *testing.T) {
	// Borrow httptest's self-signed certificate.
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	cert := ts.TLS.Certificates[0]
	ts.Close()

	sni := make(chan string, 1)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			select {
			case sni <- hello.ServerName:
			default:
			}
			return nil, nil
		},
	}
	addr, hs := grpcServer(t, grpc.Creds(credentials.NewTLS(cfg)))
	hs.SetServingStatus("", grpc_health_v1.HealthCheckResponse_SERVING)
	spec := Spec{Protocol: "HTTPS", ProtocolVersion: "GRPC", Path: "/grpc.health.v1.Health/Check", Host: "grpc.example.test", Matcher: mustMatcher(t, "0", true)}
	wantHealthy(t, probe(t, addr, spec), 0)
	if s := <-sni; s != "grpc.example.test" {
		t.Fatalf("server saw SNI %q", s)
	}
	// Plaintext against a TLS server fails.
	spec.Protocol = "HTTP"
	if r := probe(t, addr, spec); r.Healthy {
		t.Fatalf("plaintext against TLS: %+v", r)
	}
}
