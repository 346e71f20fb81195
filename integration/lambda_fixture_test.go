package integration_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The lambda tests run a real function, built from testdata/lambdafn with
// aws-lambda-go, in the AWS Lambda Runtime Interface Emulator, built from
// the version tools/lambda-rie pins; both are built by the test itself
// (Go's build cache makes repeats quick).

// lambdaBins are the emulator and the function, built for one test.
type lambdaBins struct{ rie, fn string }

func buildLambdaBins(t *testing.T) lambdaBins {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the Lambda emulator and a function, and runs them with a built Caddy; skipped with -short")
	}
	dir := t.TempDir()
	b := lambdaBins{rie: filepath.Join(dir, "aws-lambda-rie"), fn: filepath.Join(dir, "bootstrap")}
	for _, step := range []struct{ dir, out, pkg string }{
		{"../tools/lambda-rie", b.rie, "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"},
		{"testdata/lambdafn", b.fn, "."},
	} {
		cmd := exec.Command("go", "build", "-o", step.out, step.pkg)
		cmd.Dir = step.dir
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s in %s: %v\n%s", step.pkg, step.dir, err, out)
		}
	}
	return b
}

// startRIE runs the function in an emulator of its own, with env added
// (AWS_LAMBDA_FUNCTION_TIMEOUT), and returns its Invoke endpoint's base
// URL. The emulator stops when the test ends. A port that another test
// took between freePort and the emulator's listen makes it exit at once:
// it is started again on other ports.
func startRIE(t *testing.T, b lambdaBins, env ...string) string {
	t.Helper()
	for range 5 {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		cmd := exec.Command(b.rie, "--runtime-interface-emulator-address", addr, "--runtime-api-address", fmt.Sprintf("127.0.0.1:%d", freePort(t)), b.fn)
		cmd.Env = append(os.Environ(), env...)
		logs := new(bytes.Buffer)
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		up := false
		waitFor(t, "the emulator's listener", 20*time.Second, func() bool {
			select {
			case <-exited:
				return true
			default:
			}
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
				up = true
			}
			return up
		})
		if !up {
			t.Logf("the emulator exited at start; trying other ports:\n%s", clipBody(logs.Bytes()))
			continue
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
			if t.Failed() {
				t.Logf("aws-lambda-rie output:\n%s", logs.String())
			}
		})
		return "http://" + addr
	}
	t.Fatal("the emulator did not start")
	return ""
}

// lambdaGroup is a lambda group of the emulator's one function.
func lambdaGroup(extra map[string]any) map[string]any {
	g := map[string]any{"type": "lambda", "targets": []any{map[string]any{"id": "function"}}}
	for k, v := range extra {
		g[k] = v
	}
	return g
}

// stripped routes /<prefix>/* to group, the prefix stripped.
func stripped(prefix, group string) map[string]any {
	return route("/"+prefix+"/*", map[string]any{"handler": "rewrite", "strip_path_prefix": "/" + prefix}, tgHandler(group))
}

// answer is one response through Caddy.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) String() string { return fmt.Sprintf("%d %q", a.status, clipBody(a.body)) }

func clipBody(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// send makes one request and reads the whole answer.
func send(t *testing.T, method, url string, body []byte, header http.Header) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == nil {
		req.Body = nil
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, url, err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

// event decodes the event the echoing function answered with.
func event(t *testing.T, a answer) map[string]any {
	t.Helper()
	if a.status != 200 {
		t.Fatalf("echo: %s", a)
	}
	var ev map[string]any
	if err := json.Unmarshal(a.body, &ev); err != nil {
		t.Fatalf("echo body is not an event: %v: %s", err, clipBody(a.body))
	}
	return ev
}

// logHas waits for the Caddy process's log to have a line with every one
// of parts.
func (p *caddyProc) logHas(parts ...string) {
	p.t.Helper()
	waitFor(p.t, fmt.Sprintf("a log line with %q", parts), 10*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(p.dir, "caddy.log"))
		for line := range strings.SplitSeq(string(b), "\n") {
			all := true
			for _, part := range parts {
				all = all && strings.Contains(line, part)
			}
			if all {
				return true
			}
		}
		return false
	})
}

// groupInfo is what the JSON API says of a group.
type groupInfo struct {
	ARN string `json:"arn"`
	ID  string `json:"id"`
}

func (p *caddyProc) group(name string) groupInfo {
	p.t.Helper()
	var g groupInfo
	p.mustAPI("GET", "/target-groups/"+name, nil, &g)
	if g.ARN == "" || g.ID == "" {
		p.t.Fatalf("group %s: no arn or id", name)
	}
	return g
}
