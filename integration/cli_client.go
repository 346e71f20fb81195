package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// The client side of the admin API: finding a group, calling the API,
// reading its refusals, printing its JSON.

// group is the group --target-group (or --target-group-arn) names, as
// given: the admin API takes a name, an id (tg-…) or either ARN.
func (c *cliCall) group() (string, error) {
	ref, arn := c.str("target-group"), c.str("target-group-arn")
	switch {
	case ref != "" && arn != "":
		return "", paramErrorf("--target-group and --target-group-arn exclude each other")
	case ref == "" && arn == "":
		return "", paramErrorf("--target-group is required")
	case ref == "":
		ref = arn
	}
	return ref, nil
}

// do calls the admin API and returns the answer's body. A refusal is the
// API's error.code and message; an endpoint that can't be reached is an
// EndpointConnectionError.
func (c *cliCall) do(method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, paramErrorf("%v", err)
		}
		rd = bytes.NewReader(b)
	}
	resp, err := caddycmd.AdminAPIRequest(c.addr, method, path, nil, rd)
	if err != nil {
		return nil, adminError(c.addr, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &cliError{codeEndpoint, fmt.Sprintf("reading the answer of %s: %v", endpointURL(c.addr, path), err)}
	}
	return raw, nil
}

// doWithin is do, given up on at deadline: AdminAPIRequest sets no
// timeout, and a waiter must end.
func (c *cliCall) doWithin(deadline time.Time, method, path string) ([]byte, error) {
	type result struct {
		raw []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		raw, err := c.do(method, path, nil)
		done <- result{raw, err}
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case r := <-done:
		return r.raw, r.err
	case <-timer.C:
		return nil, &cliError{codeEndpoint, fmt.Sprintf("no answer from %s", endpointURL(c.addr, path))}
	}
}

var (
	// AdminAPIRequest's error for an answer of 400 or more.
	adminStatusError = regexp.MustCompile(`(?s)^caddy responded with error: HTTP (\d+): (.*)$`)
	// AdminAPIRequest's error for a request that got no answer.
	adminRequestError = regexp.MustCompile(`^performing request: [A-Za-z]+ "[^"]*": `)
)

// adminError is the failure an error of AdminAPIRequest reports.
func adminError(addr, path string, err error) error {
	msg := err.Error()
	m := adminStatusError.FindStringSubmatch(msg)
	if m == nil {
		if strings.HasPrefix(msg, "invalid admin address") {
			return paramErrorf("%s", msg)
		}
		msg = adminRequestError.ReplaceAllString(msg, "")
		return &cliError{codeEndpoint, fmt.Sprintf("Could not connect to the endpoint URL: %q: %s", endpointURL(addr, path), strings.TrimPrefix(msg, "performing request: "))}
	}
	status, _ := strconv.Atoi(m[1])
	body := strings.TrimSpace(m[2])
	code := strings.ReplaceAll(http.StatusText(status), " ", "")
	if code == "" {
		code = "HTTP" + m[1]
	}
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal([]byte(body), &e) == nil && len(e.Error) > 0 {
		var coded struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		var text string
		switch {
		case json.Unmarshal(e.Error, &coded) == nil && coded.Code != "":
			return &cliError{coded.Code, coded.Message}
		case json.Unmarshal(e.Error, &text) == nil:
			return &cliError{code, text} // an error of Caddy's admin endpoint itself
		}
	}
	if body == "" {
		body = http.StatusText(status)
	}
	return &cliError{code, body}
}

// endpointURL is the URL of a call, for messages.
func endpointURL(addr, path string) string {
	if strings.Contains(addr, "/") { // unix/…, fd/…, tcp/…
		return addr + path
	}
	return "http://" + addr + path
}

func badAnswer(err error) error {
	return &cliError{"InvalidResponse", fmt.Sprintf("the admin API's answer is not what it should be: %v", err)}
}

// printRaw prints an answer of the API as indented JSON.
func (c *cliCall) printRaw(raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "    "); err != nil {
		return badAnswer(err)
	}
	buf.WriteByte('\n')
	_, err := c.out.Write(buf.Bytes())
	return err
}

func (c *cliCall) printJSON(v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return badAnswer(err)
	}
	return c.printRaw(raw)
}
