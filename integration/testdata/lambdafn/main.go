// Command lambdafn is the function the lambda tests run in the AWS Lambda
// Runtime Interface Emulator. What it does is chosen by the request path:
//
//	/boom        returns an error (a function error)
//	/sleep?d=2s  sleeps d (its deadline notwithstanding), then echoes
//	/binary      answers the bytes 0-255, base64-encoded
//	/cookies     answers three Set-Cookie headers (multiValueHeaders)
//	/both-headers answers headers and multiValueHeaders, each with its own
//	             X-Field and the same Content-Type
//	/panic       panics (the emulator answers an HTTP 502)
//	/malformed   answers something that is not a response
//	/status/NNN  answers status NNN
//	/echo-body   answers the request's body as it came (base64 kept)
//	/health-ua   answers 200 to an ALB health-check event (GET, user
//	             agent ELB-HealthChecker/2.0, no body), 400 to anything else
//	anything else echoes the event it got, as JSON
//
// ALB events are decoded with aws-lambda-go's types; VPC Lattice events
// (which aws-lambda-go has no types for) into a map.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

// answer is the response, the same for ALB and Lattice.
type answer = events.ALBTargetGroupResponse

func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	var probe map[string]any
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, err
	}
	path, _ := probe["path"].(string)
	if p, ok := probe["raw_path"].(string); ok {
		path = p
	}
	var alb events.ALBTargetGroupRequest
	isALB := probe["httpMethod"] != nil
	if isALB {
		if err := json.Unmarshal(raw, &alb); err != nil {
			return nil, err
		}
	}
	query := func(name string) string {
		if isALB {
			if v, ok := alb.QueryStringParameters[name]; ok {
				return v
			}
			if vs := alb.MultiValueQueryStringParameters[name]; len(vs) > 0 {
				return vs[len(vs)-1]
			}
			return ""
		}
		for _, key := range []string{"queryStringParameters", "query_string_parameters"} {
			if m, ok := probe[key].(map[string]any); ok {
				if v, ok := m[name].(string); ok {
					return v
				}
			}
		}
		return ""
	}
	switch {
	case path == "/boom":
		return nil, errors.New("boom requested")
	case path == "/sleep":
		d, err := time.ParseDuration(query("d"))
		if err != nil {
			d = time.Second
		}
		// Not cut short at the invocation's deadline: past the
		// function's own timeout the emulator, not the function, ends it
		// (TestLambdaTimeouts), as Lambda does.
		time.Sleep(d)
	case path == "/binary":
		b := make([]byte, 256)
		for i := range b {
			b[i] = byte(i)
		}
		return answer{StatusCode: 200, Headers: map[string]string{"Content-Type": "application/octet-stream"},
			Body: base64.StdEncoding.EncodeToString(b), IsBase64Encoded: true}, nil
	case path == "/cookies":
		return answer{StatusCode: 200,
			MultiValueHeaders: map[string][]string{"Set-Cookie": {"a=1", "b=2", "c=3"}, "Content-Type": {"text/plain"}},
			Body:              "cookies"}, nil
	case path == "/both-headers":
		return answer{StatusCode: 200,
			Headers:           map[string]string{"Content-Type": "text/plain", "X-Field": "headers"},
			MultiValueHeaders: map[string][]string{"Content-Type": {"text/plain"}, "X-Field": {"multiValueHeaders"}, "Set-Cookie": {"a=1", "b=2"}},
			Body:              "both"}, nil
	case path == "/panic":
		panic("panic requested")
	case path == "/malformed":
		return []string{"not", "a", "response"}, nil
	case strings.HasPrefix(path, "/status/"):
		code, _ := strconv.Atoi(strings.TrimPrefix(path, "/status/"))
		return answer{StatusCode: code, StatusDescription: strconv.Itoa(code), Headers: map[string]string{"Content-Type": "text/plain"}, Body: "status " + strconv.Itoa(code)}, nil
	case path == "/health-ua":
		ua := alb.Headers["user-agent"]
		if vs := alb.MultiValueHeaders["user-agent"]; len(vs) > 0 {
			ua = vs[0]
		}
		if isALB && alb.HTTPMethod == "GET" && ua == "ELB-HealthChecker/2.0" && alb.Body == "" {
			return answer{StatusCode: 200, Body: "ok"}, nil
		}
		return answer{StatusCode: 400, Body: "not a health check event"}, nil
	case path == "/echo-body" && isALB:
		ct := alb.Headers["content-type"]
		if vs := alb.MultiValueHeaders["content-type"]; len(vs) > 0 {
			ct = vs[0]
		}
		return answer{StatusCode: 200, Headers: map[string]string{"Content-Type": ct}, Body: alb.Body, IsBase64Encoded: alb.IsBase64Encoded}, nil
	}
	return answer{StatusCode: 200, StatusDescription: "200 OK", Headers: map[string]string{"Content-Type": "application/json", "X-Echo": "yes"}, Body: string(raw)}, nil
}

func main() { lambda.Start(handle) }
