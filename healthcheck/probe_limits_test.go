package healthcheck

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// big is well past maxHeaderBytes and well within every library default, so
// only the bounds set by the prober can make these checks fail.
const big = 1 << 20

// rawHTTPServer answers every connection with a 200 carrying one header of
// the given size, written by hand so that no server-side limit applies.
func rawHTTPServer(t *testing.T, headerSize int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for { // the request head, up to its blank line
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				w := bufio.NewWriter(c)
				w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Big: ")
				w.WriteString(strings.Repeat("a", headerSize))
				w.WriteString("\r\n\r\n")
				w.Flush() // fails once the prober gives up; nothing to do about it
			}()
		}
	}()
	return ln.Addr().String()
}

// h2cServer serves handler over HTTP/2 in clear text; Go's server sends
// whatever headers a handler sets, whatever limit the client advertised.
func h2cServer(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	ts := httptest.NewUnstartedServer(handler)
	ts.Config.Protocols = new(http.Protocols)
	ts.Config.Protocols.SetUnencryptedHTTP2(true)
	ts.Start()
	t.Cleanup(ts.Close)
	return addrOf(ts)
}

func TestProbeHTTPHugeHeaders(t *testing.T) {
	t.Run("HTTP1", func(t *testing.T) {
		wantHealthy(t, probe(t, rawHTTPServer(t, 1<<10), Spec{Protocol: "HTTP"}), 200)
		wantUnhealthy(t, probe(t, rawHTTPServer(t, big), Spec{Protocol: "HTTP"}),
			ReasonFailedHealthChecks, -1, "exceeded "+strconv.Itoa(maxHeaderBytes))
	})
	t.Run("HTTP2", func(t *testing.T) {
		headers := func(n, size int) http.HandlerFunc {
			return func(w http.ResponseWriter, _ *http.Request) {
				for i := range n {
					w.Header().Set("X-Big-"+strconv.Itoa(i), strings.Repeat("a", size))
				}
			}
		}
		h2 := Spec{Protocol: "HTTP", ProtocolVersion: "HTTP2"}
		wantHealthy(t, probe(t, h2cServer(t, headers(1, 1<<10)), h2), 200)
		wantUnhealthy(t, probe(t, h2cServer(t, headers(5, 15<<10)), h2),
			ReasonFailedHealthChecks, -1, "header list larger")
		// Far past the bound, the client gives up on the whole connection.
		for _, n := range []int{1, 64} {
			wantUnhealthy(t, probe(t, h2cServer(t, headers(n, big/n)), h2),
				ReasonFailedHealthChecks, -1, "connection error")
		}
	})
}

// grpcAnswer returns a handler answering any gRPC call with OK, after
// headers and a message of the given sizes.
func grpcAnswer(headers, headerSize, messageSize int) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		for i := range headers {
			w.Header().Set("X-Big-"+strconv.Itoa(i), strings.Repeat("a", headerSize))
		}
		w.WriteHeader(http.StatusOK)
		var prefix [5]byte // uncompressed, then the length
		binary.BigEndian.PutUint32(prefix[1:], uint32(messageSize))
		w.Write(prefix[:])
		w.Write(make([]byte, messageSize))
		w.Header().Set("Grpc-Status", "0")
	}
}

func TestProbeGRPCHugeAnswers(t *testing.T) {
	// Any code would pass: only the prober's own verdict can fail these.
	spec := Spec{Protocol: "HTTP", ProtocolVersion: "GRPC", Matcher: mustMatcher(t, "0-99", true)}
	wantHealthy(t, probe(t, h2cServer(t, grpcAnswer(1, 1<<10, 1<<10)), spec), 0)
	for _, c := range []struct {
		name               string
		headers, size, msg int
		desc               string
	}{
		// grpc reports headers somewhat past the bound as such, and
		// headers far past it, or one value past it, as a broken connection.
		{"headers past the bound", 5, 15 << 10, 0, "header list size exceeded"},
		{"headers far past the bound", 64, 16 << 10, 0, "error reading from server"},
		{"one huge header", 1, big, 0, "error reading from server"},
		{"huge message", 1, 1 << 10, big, "larger than max"},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := h2cServer(t, grpcAnswer(c.headers, c.size, c.msg))
			wantUnhealthy(t, probe(t, addr, spec), ReasonFailedHealthChecks, -1, c.desc)
		})
	}
}
