package integration_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// FuzzStickyCookie sends requests with fuzzed Cookie headers through an
// in-process Caddy whose group sticks with lb_cookie. Whatever the header
// holds, the request is served by one of the registered backends with a
// 200 and a fresh AWSALB cookie; the one genuine cookie pins its target.
//
//	go test ./integration -run '^$' -fuzz '^FuzzStickyCookie$' -fuzztime 1m
func FuzzStickyCookie(f *testing.F) {
	names := map[string]bool{}
	var ports []int
	for _, name := range []string{"a", "b", "c"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, name)
		}))
		f.Cleanup(srv.Close)
		names[name] = true
		ports = append(ports, srv.Listener.Addr().(*net.TCPAddr).Port)
	}
	admin, addr := fuzzFreeAddr(f), fuzzFreeAddr(f)
	cfg := strings.NewReplacer("{ADMIN}", admin, "{HTTP}", addr).Replace(caddyConfig{
		groups: map[string]any{"web": `{
			"health_check": {"interval": "5s", "timeout": "2s"},
			"attributes": {"stickiness.enabled": "true", "stickiness.type": "lb_cookie"}
		}`},
		routes: []any{route("", tgHandler("web"))},
		top: map[string]any{
			"storage": map[string]any{"module": "file_system", "root": f.TempDir()},
			"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		},
	}.json())
	if err := caddy.Load([]byte(cfg), true); err != nil {
		f.Fatalf("loading config: %v", err)
	}
	f.Cleanup(func() { _ = caddy.Stop() })
	ts := make([]map[string]any, len(ports))
	for i, p := range ports {
		ts[i] = map[string]any{"id": "127.0.0.1", "port": p}
	}
	body, _ := json.Marshal(map[string]any{"targets": ts})
	resp, err := http.Post("http://"+admin+"/target-groups/web/targets", "application/json", strings.NewReader(string(body)))
	if err != nil || resp.StatusCode != 200 {
		f.Fatalf("register: %v %v", err, resp)
	}
	resp.Body.Close()
	deadline := time.Now().Add(15 * time.Second)
	for fuzzHealthy(admin) < len(ports) {
		if time.Now().After(deadline) {
			f.Fatal("targets did not turn healthy")
		}
		time.Sleep(20 * time.Millisecond)
	}

	client := &http.Client{Timeout: 10 * time.Second}
	get := func(cookie string) (int, string, string, error) {
		req, err := http.NewRequest("GET", "http://"+addr+"/", nil)
		if err != nil {
			return 0, "", "", err
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var lb string
		for _, c := range resp.Cookies() {
			if c.Name == "AWSALB" {
				lb = c.Value
			}
		}
		return resp.StatusCode, string(b), lb, nil
	}
	_, pinned, genuine, err := get("")
	if err != nil || genuine == "" {
		f.Fatalf("first request: %v, cookie %q", err, genuine)
	}
	for _, s := range []string{
		"AWSALB=" + genuine,
		"AWSALB=" + genuine + "; AWSALBCORS=" + genuine,
		"AWSALB=" + genuine[:len(genuine)/2],
		"AWSALB=" + strings.ToUpper(genuine),
		"AWSALB=; AWSALB=" + genuine,
		"AWSALB=AAAA", "AWSALB===", "AWSALB", "=", ";;;", "AWSALB=%00", "a=b; AWSALB=\"" + genuine + "\"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cookie string) {
		if strings.ContainsFunc(cookie, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return // not a header value a client can send
		}
		code, got, lb, err := get(cookie)
		if err != nil {
			if strings.Contains(err.Error(), "invalid header") {
				return
			}
			t.Fatalf("Cookie %q: %v", cookie, err)
		}
		if code != 200 || !names[got] {
			t.Fatalf("Cookie %q: status %d from %q", cookie, code, got)
		}
		if lb == "" {
			t.Fatalf("Cookie %q: no AWSALB cookie in the answer", cookie)
		}
		if cookie == "AWSALB="+genuine && got != pinned {
			t.Fatalf("the genuine cookie of %s went to %s", pinned, got)
		}
	})
}

func fuzzFreeAddr(tb testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// fuzzHealthy counts the healthy targets of group web.
func fuzzHealthy(admin string) int {
	resp, err := http.Get("http://" + admin + "/target-groups/web/targets")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var h healthAnswer
	if json.NewDecoder(resp.Body).Decode(&h) != nil {
		return 0
	}
	n := 0
	for _, t := range h.Targets {
		if t.TargetHealth.State == "healthy" {
			n++
		}
	}
	return n
}
