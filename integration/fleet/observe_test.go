package fleet_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Watching the fleet: the admin API client, each node's view of a group,
// and polling until a condition holds on every node.

// Admin API.

// call sends one admin API request; the error is a transport error only.
// Safe to call from any goroutine.
func (n *node) call(method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, "http://"+n.admin+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// api calls the admin API, decodes a JSON answer into out (if not nil) and
// returns the status; a transport error fails the test.
func (n *node) api(method, path string, body, out any) int {
	n.t.Helper()
	code, raw, err := n.call(method, path, body)
	if err != nil {
		n.t.Fatalf("%s: %s %s: %v", n.id, method, path, err)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			n.t.Fatalf("%s: %s %s: status %d, decoding %q: %v", n.id, method, path, code, raw, err)
		}
	}
	return code
}

// getJSON reads an admin API resource into out. Safe to call from any
// goroutine.
func (n *node) getJSON(path string, out any) (int, error) {
	code, raw, err := n.call("GET", path, nil)
	if err != nil {
		return 0, err
	}
	if code == http.StatusOK {
		if err := json.Unmarshal(raw, out); err != nil {
			return code, fmt.Errorf("decoding %q: %v", raw, err)
		}
	}
	return code, nil
}

// mustAPI calls the admin API for a call the test relies on: any answer
// but 200 fails the test at once, with the answer.
func (n *node) mustAPI(method, path string, body, out any) {
	n.t.Helper()
	code, raw, err := n.call(method, path, body)
	if err != nil {
		n.t.Fatalf("%s: %s %s: %v", n.id, method, path, err)
	}
	if code != http.StatusOK {
		n.t.Fatalf("%s: %s %s: status %d: %s", n.id, method, path, code, raw)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			n.t.Fatalf("%s: %s %s: decoding %q: %v", n.id, method, path, raw, err)
		}
	}
}

// targetsBody is a RegisterTargets / DeregisterTargets body of loopback
// targets.
func targetsBody(ports ...int) map[string]any {
	ts := make([]map[string]any, len(ports))
	for i, p := range ports {
		ts[i] = map[string]any{"id": "127.0.0.1", "port": p}
	}
	return map[string]any{"targets": ts}
}

func (n *node) register(group string, ports ...int) {
	n.t.Helper()
	n.mustAPI("POST", "/target-groups/"+group+"/targets", targetsBody(ports...), nil)
}

func (n *node) deregister(group string, ports ...int) {
	n.t.Helper()
	n.mustAPI("POST", "/target-groups/"+group+"/targets/deregister", targetsBody(ports...), nil)
}

// apiError is the admin API's error answer.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// refusedForStorage checks one answer to a write while the storage is
// down: 503 StorageUnavailable; it returns what is wrong, or "".
func refusedForStorage(code int, raw []byte, err error) string {
	if err != nil {
		return "no answer: " + err.Error()
	}
	var e apiError
	_ = json.Unmarshal(raw, &e)
	if code != http.StatusServiceUnavailable || e.Error.Code != "StorageUnavailable" {
		return fmt.Sprintf("status %d %s, want 503 with error code StorageUnavailable", code, bytes.TrimSpace(raw))
	}
	return ""
}

// target is one entry of DescribeTargetHealth; nodes is filled with
// ?scope=cluster.
type target struct {
	Target struct {
		ID   string `json:"id"`
		Port int    `json:"port"`
	} `json:"target"`
	TargetHealth struct {
		State       string `json:"state"`
		Reason      string `json:"reason"`
		Description string `json:"description"`
	} `json:"target_health"`
	InFlight int64       `json:"in_flight"`
	Nodes    []nodeState `json:"nodes"`
}

// nodeState is one node's view of a target in ?scope=cluster.
type nodeState struct {
	Node     string `json:"node"`
	State    string `json:"state"`
	Reason   string `json:"reason"`
	InFlight int64  `json:"in_flight"`
}

// view is a node's targets of one group, by port (every target of the
// suite is on 127.0.0.1).
type view map[int]target

func (v view) String() string {
	ps := make([]int, 0, len(v))
	for p := range v {
		ps = append(ps, p)
	}
	sort.Ints(ps)
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%d:%s", p, v[p].TargetHealth.State))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// targets reads the node's DescribeTargetHealth of group (query "" or
// "?scope=cluster"). Safe to call from any goroutine.
func (n *node) targets(group, query string) (view, error) {
	code, raw, err := n.call("GET", "/target-groups/"+group+"/targets"+query, nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET targets of %s: status %d: %s", group, code, bytes.TrimSpace(raw))
	}
	var ans struct {
		Targets []target `json:"targets"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return nil, fmt.Errorf("GET targets of %s: decoding %q: %v", group, raw, err)
	}
	v := view{}
	for _, e := range ans.Targets {
		v[e.Target.Port] = e
	}
	return v, nil
}

// isRegistered: the target is registered (in any state but draining).
func isRegistered(v view, port int) bool {
	e, ok := v[port]
	return ok && e.TargetHealth.State != "draining" && e.TargetHealth.State != "unused"
}

// isDeregistered: the target is draining or gone.
func isDeregistered(v view, port int) bool { return !isRegistered(v, port) }

// registered holds when every port is registered.
func registered(ports ...int) func(view) bool {
	return func(v view) bool {
		for _, p := range ports {
			if !isRegistered(v, p) {
				return false
			}
		}
		return true
	}
}

// deregistered holds when every port is draining or gone.
func deregistered(ports ...int) func(view) bool {
	return func(v view) bool {
		for _, p := range ports {
			if !isDeregistered(v, p) {
				return false
			}
		}
		return true
	}
}

// healthy holds when every port is healthy.
func healthy(ports ...int) func(view) bool {
	return func(v view) bool {
		for _, p := range ports {
			if v[p].TargetHealth.State != "healthy" {
				return false
			}
		}
		return true
	}
}

// Polling.

// probe asks one node whether a condition holds, and says what it saw.
type probe func(n *node) (ok bool, saw string)

// onTargets is a probe of the group's DescribeTargetHealth.
func onTargets(group string, cond func(view) bool) probe {
	return func(n *node) (bool, string) {
		v, err := n.targets(group, "")
		if err != nil {
			return false, err.Error()
		}
		return cond(v), "targets " + v.String()
	}
}

// converge polls each node every 10 ms until p holds on it, and returns how
// long after from the last of them first did. The error names every node
// on which it did not within timeout of from, with what it showed last.
// Safe to call from any goroutine.
func converge(nodes []*node, from time.Time, timeout time.Duration, what string, p probe) (time.Duration, error) {
	each, err := convergeEach(nodes, from, timeout, what, p)
	return each.max(), err
}

// tookBy is how long each node took.
type tookBy struct {
	nodes []*node
	took  []time.Duration
}

func (k tookBy) max() time.Duration {
	if len(k.took) == 0 {
		return 0
	}
	return slices.Max(k.took)
}

func (k tookBy) String() string {
	parts := make([]string, len(k.nodes))
	for i, n := range k.nodes {
		parts[i] = fmt.Sprintf("%s %s", n.id, k.took[i].Round(time.Millisecond))
	}
	return strings.Join(parts, ", ")
}

// convergeEach is converge, with the time of each node.
func convergeEach(nodes []*node, from time.Time, timeout time.Duration, what string, p probe) (tookBy, error) {
	deadline := from.Add(timeout)
	took := make([]time.Duration, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			for {
				ok, saw := p(n)
				now := time.Now()
				if ok {
					took[i] = now.Sub(from)
					return
				}
				if now.After(deadline) {
					errs[i] = fmt.Errorf("%s: not %s within %s; it showed %s", n.id, what, timeout, saw)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	return tookBy{nodes, took}, errors.Join(errs...)
}

// waitAll is converge for the test goroutine: it fails the test on a
// timeout, and returns how long it took.
func waitAll(t *testing.T, nodes []*node, timeout time.Duration, what string, p probe) time.Duration {
	t.Helper()
	d, err := converge(nodes, time.Now(), timeout, what, p)
	if err != nil {
		t.Fatalf("timed out waiting for %s:\n%v", what, err)
	}
	return d
}

// holds polls each node every 10 ms for d and returns an error at the
// first time p does not hold on one of them.
func holds(nodes []*node, d time.Duration, what string, p probe) error {
	end := time.Now().Add(d)
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			for time.Now().Before(end) {
				if ok, saw := p(n); !ok {
					errs[i] = fmt.Errorf("%s: no longer %s at %s: it showed %s", n.id, what, time.Now().Format("15:04:05.000"), saw)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// percentile is the nearest-rank percentile q (0-100) of ds.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*q/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}
