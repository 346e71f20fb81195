package integration

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The events lambda groups send their functions and the answers they take
// back, as ALB and VPC Lattice have them. Nothing here does I/O, so that
// the mapping is tested on its own.

// Event structure versions (lambda_event_structure_version); "" is ALB's.
const (
	eventALB = ""
	eventV1  = "V1"
	eventV2  = "V2"
)

// Limits of the request body and of the answer's JSON: ALB's 1 MB, VPC
// Lattice's 6 MB.
const (
	albLambdaLimit     = 1 << 20
	latticeLambdaLimit = 6 << 20
)

func lambdaLimit(version string) int {
	if version == eventALB {
		return albLambdaLimit
	}
	return latticeLambdaLimit
}

// lambdaRequest is what the event of one request is made of.
type lambdaRequest struct {
	Version    string // eventALB, eventV1 or eventV2
	MultiValue bool   // lambda.multi_value_headers.enabled (ALB events)
	// ALBARN names the group in ALB events, LatticeARN in V2 events.
	ALBARN, LatticeARN, Region string

	Method   string
	Path     string // as the client sent it, percent-encoding kept
	RawQuery string
	Host     string
	Header   http.Header
	Body     []byte

	// For the x-forwarded-* headers: the client's address, the port and
	// scheme it reached Caddy on.
	ClientIP, Port, Proto string
	// Check: a health check, whose event has its own headers only.
	Check bool
	Now   time.Time
}

// textual reports whether ALB passes a body of this content type as text;
// every other body is base64-encoded.
func textual(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt, _, _ = strings.Cut(strings.ToLower(strings.TrimSpace(contentType)), ";")
	}
	switch {
	case strings.HasPrefix(mt, "text/"), mt == "application/json", mt == "application/javascript", mt == "application/xml":
		return true
	}
	return false
}

// eventHeaders are the request's headers as the load balancer forwards
// them: lower-case names, Host included, and the x-forwarded-* and
// x-amzn-trace-id headers ALB adds (a client's x-forwarded-for is
// extended, its trace id kept).
func eventHeaders(req *lambdaRequest) map[string][]string {
	h := make(map[string][]string, len(req.Header)+5)
	for k, vs := range req.Header {
		h[strings.ToLower(k)] = append([]string(nil), vs...)
	}
	if req.Check {
		return h
	}
	if req.Host != "" {
		h["host"] = []string{req.Host}
	}
	if req.ClientIP != "" {
		if xff := h["x-forwarded-for"]; len(xff) > 0 {
			h["x-forwarded-for"] = []string{strings.Join(xff, ", ") + ", " + req.ClientIP}
		} else {
			h["x-forwarded-for"] = []string{req.ClientIP}
		}
	}
	if req.Port != "" {
		h["x-forwarded-port"] = []string{req.Port}
	}
	if req.Proto != "" {
		h["x-forwarded-proto"] = []string{req.Proto}
	}
	if len(h["x-amzn-trace-id"]) == 0 {
		h["x-amzn-trace-id"] = []string{traceID(req.Now)}
	}
	return h
}

// traceID is an X-Amzn-Trace-Id root as ALB makes them: 1-<epoch seconds
// in hex>-<96 random bits>.
func traceID(now time.Time) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("Root=1-%08x-%s", now.Unix(), hex.EncodeToString(b[:]))
}

// rawQueryParams splits a query string as ALB does: names and values as
// the client sent them, not percent-decoded; last holds each name's last
// value.
func rawQueryParams(q string) (last map[string]string, all map[string][]string) {
	last, all = map[string]string{}, map[string][]string{}
	for kv := range strings.SplitSeq(q, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		all[k] = append(all[k], v)
		last[k] = v
	}
	return last, all
}

func lastValues(h map[string][]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		if len(vs) > 0 {
			out[k] = vs[len(vs)-1]
		}
	}
	return out
}

func joinedValues(h map[string][]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		out[k] = strings.Join(vs, ",")
	}
	return out
}

// encodeBody is the event's body and isBase64Encoded.
func encodeBody(req *lambdaRequest) (string, bool) {
	if len(req.Body) == 0 {
		return "", false
	}
	// A JSON string holds only UTF-8: a text body in another charset would
	// reach the function with its bytes replaced, base64 keeps them.
	if textual(req.Header.Get("Content-Type")) && utf8.Valid(req.Body) {
		return string(req.Body), false
	}
	return base64.StdEncoding.EncodeToString(req.Body), true
}

// buildEvent is the JSON event of req in its version's structure.
func buildEvent(req *lambdaRequest) ([]byte, error) {
	headers := eventHeaders(req)
	last, all := rawQueryParams(req.RawQuery)
	body, b64 := encodeBody(req)
	var ev map[string]any
	switch req.Version {
	case eventALB:
		ev = map[string]any{
			"requestContext":  map[string]any{"elb": map[string]any{"targetGroupArn": req.ALBARN}},
			"httpMethod":      req.Method,
			"path":            req.Path,
			"body":            body,
			"isBase64Encoded": b64,
		}
		if req.MultiValue {
			ev["multiValueHeaders"] = headers
			ev["multiValueQueryStringParameters"] = all
		} else {
			ev["headers"] = lastValues(headers)
			ev["queryStringParameters"] = last
		}
	case eventV1:
		// Lattice's V1 joins repeated headers with commas and has no
		// request context.
		ev = map[string]any{
			"raw_path":                req.Path,
			"method":                  req.Method,
			"headers":                 joinedValues(headers),
			"query_string_parameters": last,
			"body":                    body,
			"is_base64_encoded":       b64,
		}
	case eventV2:
		ev = map[string]any{
			"version":               "2.0",
			"path":                  req.Path,
			"method":                req.Method,
			"headers":               headers,
			"queryStringParameters": last,
			"body":                  body,
			"isBase64Encoded":       b64,
			"requestContext": map[string]any{
				// Caddy is no Lattice service in a service network, but
				// the event's parsers (Powertools' schemas, the SDKs'
				// types) require both fields: empty, not absent.
				"serviceNetworkArn": "",
				"serviceArn":        "",
				"targetGroupArn":    req.LatticeARN,
				// No IAM authenticates the caller here, as with a
				// Lattice service of auth type NONE.
				"identity":  map[string]any{"type": "NONE"},
				"region":    req.Region,
				"timeEpoch": strconv.FormatInt(req.Now.UnixMicro(), 10),
			},
		}
	default:
		return nil, fmt.Errorf("lambda_event_structure_version %q must be V1, V2 or empty", req.Version)
	}
	return json.Marshal(ev)
}

// lambdaFailure is an invocation that gave the client no answer of the
// function's: the status it gets, a short reason for logs and metrics, and
// the detail.
type lambdaFailure struct {
	status int
	reason string
	detail string
}

func (f *lambdaFailure) Error() string {
	if f.detail == "" {
		return f.reason
	}
	return f.reason + ": " + f.detail
}

// Reasons of failures.
const (
	reasonFunctionError   = "function error"
	reasonFunctionTimeout = "function timed out"
	reasonMalformed       = "malformed answer"
	reasonTooLarge        = "answer too large"
	reasonInvokeTimeout   = "invocation timed out"
	reasonThrottled       = "throttled"
	reasonInvokeFailed    = "invocation failed"
	reasonClientGone      = "client gone"
	reasonQueueAbandoned  = "gave up waiting for an invocation slot"
	reasonRequestTooLarge = "request body too large"
)

// lambdaAnswer is a function's answer, as the client gets it.
type lambdaAnswer struct {
	status int
	header http.Header
	body   []byte
}

// answerJSON is the answer of ALB and Lattice functions alike. Headers
// may be strings or lists of strings (Lattice V2's shape).
type answerJSON struct {
	StatusCode        json.RawMessage            `json:"statusCode"`
	StatusDescription string                     `json:"statusDescription"`
	Headers           map[string]json.RawMessage `json:"headers"`
	MultiValueHeaders map[string][]string        `json:"multiValueHeaders"`
	Body              *string                    `json:"body"`
	IsBase64Encoded   bool                       `json:"isBase64Encoded"`
	ErrorMessage      *string                    `json:"errorMessage"`
	ErrorType         *string                    `json:"errorType"`
}

// hopHeaders are not passed on from an answer: they describe a
// connection, and Caddy frames the body itself.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Transfer-Encoding": true,
	"Te": true, "Trailer": true, "Upgrade": true, "Content-Length": true,
}

// parseAnswer maps a function's payload to the client's answer.
// functionError is the Invoke API's X-Amz-Function-Error ("" when none);
// limit is the largest payload accepted; multiValue is the group's
// lambda.multi_value_headers.enabled (ALB events).
func parseAnswer(payload []byte, functionError string, limit int, multiValue bool) (*lambdaAnswer, *lambdaFailure) {
	if len(payload) > limit {
		return nil, &lambdaFailure{status: http.StatusBadGateway, reason: reasonTooLarge, detail: fmt.Sprintf("%d bytes of JSON, more than the %d allowed", len(payload), limit)}
	}
	var a answerJSON
	jsonErr := json.Unmarshal(payload, &a)
	noStatus := len(a.StatusCode) == 0 || string(a.StatusCode) == "null"
	if functionError != "" || jsonErr == nil && noStatus && (a.ErrorMessage != nil || a.ErrorType != nil) {
		return nil, functionFailure(functionError, a)
	}
	if jsonErr != nil {
		text := strings.TrimSpace(string(payload))
		if strings.HasPrefix(text, "Task timed out after") {
			// The emulator's word for a function past its own timeout.
			return nil, &lambdaFailure{status: http.StatusBadGateway, reason: reasonFunctionTimeout, detail: text}
		}
		return nil, malformed("the payload is not a JSON object: %s", clip(text))
	}
	if noStatus {
		return nil, malformed("no statusCode")
	}
	code, err := strconv.Atoi(string(a.StatusCode))
	if err != nil || code < 200 || code > 599 {
		return nil, malformed("statusCode %s is not an HTTP status within 200-599", clip(string(a.StatusCode)))
	}
	out := &lambdaAnswer{status: code, header: http.Header{}}
	// ALB reads one of the two header fields, the one of the group's mode
	// (multiValueHeaders with lambda.multi_value_headers.enabled, headers
	// otherwise), and ignores the other: merging both would repeat the
	// headers a function sends in both. An answer with none in that field
	// has the other's passed on. VPC Lattice answers have headers.
	if len(a.MultiValueHeaders) > 0 && (multiValue || len(a.Headers) == 0) {
		for _, k := range slices.Sorted(maps.Keys(a.MultiValueHeaders)) {
			addHeader(out.header, k, a.MultiValueHeaders[k])
		}
	} else {
		for _, k := range slices.Sorted(maps.Keys(a.Headers)) {
			var one string
			var many []string
			switch raw := a.Headers[k]; {
			case json.Unmarshal(raw, &one) == nil:
				many = []string{one}
			case json.Unmarshal(raw, &many) == nil:
			default:
				return nil, malformed("header %q is neither a string nor a list of strings", k)
			}
			addHeader(out.header, k, many)
		}
	}
	// ALB gives an answer without a Content-Type application/octet-stream,
	// where Go's server would sniff one from the body.
	if _, ok := out.header["Content-Type"]; !ok && code != http.StatusNoContent && code != http.StatusNotModified {
		out.header.Set("Content-Type", "application/octet-stream")
	}
	if a.Body != nil {
		out.body = []byte(*a.Body)
		if a.IsBase64Encoded {
			if out.body, err = base64.StdEncoding.DecodeString(*a.Body); err != nil {
				return nil, malformed("isBase64Encoded is true and the body is not base64: %v", err)
			}
		}
	}
	return out, nil
}

func addHeader(h http.Header, k string, vs []string) {
	ck := http.CanonicalHeaderKey(k)
	if hopHeaders[ck] || k == "" {
		return
	}
	for _, v := range vs {
		h.Add(ck, v)
	}
}

func functionFailure(functionError string, a answerJSON) *lambdaFailure {
	var parts []string
	if functionError != "" {
		parts = append(parts, "X-Amz-Function-Error "+functionError)
	}
	if a.ErrorType != nil {
		parts = append(parts, *a.ErrorType)
	}
	if a.ErrorMessage != nil {
		parts = append(parts, clip(*a.ErrorMessage))
	}
	reason := reasonFunctionError
	if a.ErrorMessage != nil && strings.Contains(*a.ErrorMessage, "Task timed out after") {
		reason = reasonFunctionTimeout
	}
	return &lambdaFailure{status: http.StatusBadGateway, reason: reason, detail: strings.Join(parts, ": ")}
}

func malformed(format string, args ...any) *lambdaFailure {
	return &lambdaFailure{status: http.StatusBadGateway, reason: reasonMalformed, detail: fmt.Sprintf(format, args...)}
}

// clip keeps a function's text short enough for one log line.
func clip(s string) string {
	const n = 200
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
