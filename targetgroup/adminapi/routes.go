package adminapi

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// routes is the JSON dialect of the API, one line per AWS operation. In a
// path, {name} is a target group's name.
var routes = []route{
	{http.MethodGet, "/target-groups/", describeTargetGroups},
	{http.MethodPost, "/target-groups/", createTargetGroup},
	{http.MethodGet, "/target-groups/{name}", describeTargetGroup},
	{http.MethodPatch, "/target-groups/{name}", modifyTargetGroup},
	{http.MethodDelete, "/target-groups/{name}", deleteTargetGroup},
	{http.MethodGet, "/target-groups/{name}/attributes", describeTargetGroupAttributes},
	{http.MethodPatch, "/target-groups/{name}/attributes", modifyTargetGroupAttributes},
	{http.MethodGet, "/target-groups/{name}/targets", describeTargetHealth},
	{http.MethodPost, "/target-groups/{name}/targets", registerTargets},
	{http.MethodPost, "/target-groups/{name}/targets/deregister", deregisterTargets},
	{http.MethodGet, "/target-groups/{name}/health", describeGroupHealth},
}

// route is one operation of the API at a method and a path.
type route struct {
	method, path string
	op           func(c *call) (any, error)
}

// call is one request: the live registry, and the group its path names
// (nil at /target-groups/).
type call struct {
	reg *targetgroup.Registry
	g   *targetgroup.Group
	w   http.ResponseWriter
	r   *http.Request
}

// decode reads the request body into v (see decodeBody).
func (c *call) decode(v any) error { return decodeBody(c.w, c.r, v) }

// dispatch finds the route of a request and runs it. A path naming a group
// that does not exist is 404 whatever its method or the rest of the path;
// a route's path with another method is 405, naming the methods it takes.
// Go's ServeMux would answer differently: 405s of its own, GET routes for
// HEAD, redirects for trailing slashes, and wildcards from escaped paths.
func dispatch(w http.ResponseWriter, r *http.Request) (any, error) {
	reg := targetgroup.Current()
	if reg == nil {
		return nil, &httpError{http.StatusServiceUnavailable, CodeUnavailable, "the target_groups app is not running: declare target groups in the config (apps.target_groups, or the target_groups global option)"}
	}
	c := &call{reg: reg, w: w, r: r}
	path := "/target-groups/"
	if rest := strings.Trim(strings.TrimPrefix(r.URL.EscapedPath(), "/target-groups"), "/"); rest != "" {
		ref, sub, err := groupRef(rest)
		if err != nil {
			return nil, err
		}
		g, err := reg.Lookup(ref)
		if err != nil {
			return nil, err
		}
		c.g = g
		path += "{name}"
		if sub != "" {
			path += "/" + sub
		}
	}
	var allowed []string
	for _, rt := range routes {
		if rt.path != path {
			continue
		}
		if rt.method == r.Method {
			return rt.op(c)
		}
		allowed = append(allowed, rt.method)
	}
	if len(allowed) == 0 {
		return nil, &httpError{http.StatusNotFound, CodeNotFound, fmt.Sprintf("no such resource: %s", r.URL.Path)}
	}
	return nil, &httpError{http.StatusMethodNotAllowed, CodeMethodNotAllowed, fmt.Sprintf("%s %s: allowed methods are %s", r.Method, r.URL.Path, strings.Join(allowed, ", "))}
}

// groupRef cuts the group's name, id or ARN from the escaped path after
// /target-groups/, and returns the rest. An ARN spans slashes of its own:
// escaped (%2F, as clients send it) it is one segment; given as it is, the
// ELBv2 one takes targetgroup/<name>/<hex> and Lattice's targetgroup/<id>.
func groupRef(escaped string) (ref, sub string, err error) {
	segs := strings.Split(escaped, "/")
	n := 1
	if first := segs[0]; strings.HasPrefix(first, "arn:") && strings.HasSuffix(first, ":targetgroup") {
		n = 2
		if strings.Contains(first, ":elasticloadbalancing:") {
			n = 3
		}
		n = min(n, len(segs))
	}
	ref, err = url.PathUnescape(strings.Join(segs[:n], "/"))
	if err != nil || ref == "" {
		return "", "", invalid("path", "%q does not name a target group: give its name, id or ARN, percent-encoded", strings.Join(segs[:n], "/"))
	}
	return ref, strings.Join(segs[n:], "/"), nil
}

func describeTargetGroups(c *call) (any, error) {
	groups := c.reg.Groups()
	out := make([]targetgroup.GroupDescription, 0, len(groups))
	for _, g := range groups {
		out = append(out, g.Describe())
	}
	return map[string]any{"target_groups": out}, nil
}

func createTargetGroup(c *call) (any, error) {
	var req targetgroup.CreateRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	g, _, err := c.reg.CreateGroup(req)
	if err != nil {
		return nil, err
	}
	return g.Describe(), nil
}

func describeTargetGroup(c *call) (any, error) { return c.g.Describe(), nil }

func modifyTargetGroup(c *call) (any, error) {
	var body map[string]json.RawMessage
	if err := c.decode(&body); err != nil {
		return nil, err
	}
	if err := c.reg.ModifyHealthCheck(c.g.Name(), body); err != nil {
		return nil, err
	}
	return c.g.Describe(), nil
}

func deleteTargetGroup(c *call) (any, error) {
	if err := c.reg.DeleteGroup(c.g.Name()); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

func describeTargetGroupAttributes(c *call) (any, error) {
	return map[string]any{"attributes": c.g.Spec().Config.Attributes}, nil
}

func modifyTargetGroupAttributes(c *call) (any, error) {
	var body struct {
		Attributes map[string]string `json:"attributes"`
	}
	if err := c.decode(&body); err != nil {
		return nil, err
	}
	if err := c.reg.ModifyAttributes(c.g.Name(), body.Attributes); err != nil {
		return nil, err
	}
	return describeTargetGroupAttributes(c)
}

// TargetsRequest is the body of RegisterTargets and DeregisterTargets.
type TargetsRequest struct {
	Targets []targetgroup.TargetConfig `json:"targets"`
}

// describeTargetHealth answers DescribeTargetHealth; ?scope=cluster adds,
// per target, the state every node of the fleet sees.
func describeTargetHealth(c *call) (any, error) {
	keys, err := targetFilter(c.r, c.g)
	if err != nil {
		return nil, err
	}
	cluster := false
	switch scope := c.r.URL.Query().Get("scope"); scope {
	case "", "node":
	case "cluster":
		cluster = true
	default:
		return nil, invalid("scope", "%q must be node (this Caddy's view, the default) or cluster (every node's)", scope)
	}
	ds := c.g.DescribeTargetHealth(keys...)
	if cluster {
		keys = make([]targetgroup.TargetKey, len(ds))
		for i, d := range ds {
			keys[i] = d.Target.Key()
		}
		states := c.reg.ClusterStates(c.g, keys)
		for i := range ds {
			ds[i].Nodes = states[keys[i]]
		}
	}
	return map[string]any{"targets": ds}, nil
}

func registerTargets(c *call) (any, error) {
	var req TargetsRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	norm, err := c.reg.RegisterTargets(c.g.Name(), req.Targets)
	if err != nil {
		return nil, err
	}
	// The health of the targets of this call only: answering with the
	// whole group made large groups quadratic to fill in batches.
	return map[string]any{"targets": c.g.DescribeTargetHealth(targetKeys(norm, 0)...)}, nil
}

func deregisterTargets(c *call) (any, error) {
	var req TargetsRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	if err := c.reg.DeregisterTargets(c.g.Name(), req.Targets); err != nil {
		return nil, err
	}
	return map[string]any{"targets": c.g.DescribeTargetHealth(targetKeys(req.Targets, c.g.Spec().Config.Port)...)}, nil
}

// describeGroupHealth answers 503 while the group is below its DNS
// failover threshold, so that a DNS health check can steer clients away.
func describeGroupHealth(c *call) (any, error) {
	h := c.g.Health()
	if h.DNSFailover {
		return answer{http.StatusServiceUnavailable, h}, nil
	}
	return h, nil
}

// targetKeys lists the keys of targets, a missing port meaning defaultPort.
func targetKeys(ts []targetgroup.TargetConfig, defaultPort int) []targetgroup.TargetKey {
	keys := make([]targetgroup.TargetKey, len(ts))
	for i, t := range ts {
		if t.Port == 0 {
			t.Port = defaultPort
		}
		keys[i] = t.Key()
	}
	return keys
}

// targetFilter reads ?target=<id>[:<port>] (repeatable), the Targets
// parameter of DescribeTargetHealth.
func targetFilter(r *http.Request, g *targetgroup.Group) ([]targetgroup.TargetKey, error) {
	var keys []targetgroup.TargetKey
	for _, v := range r.URL.Query()["target"] {
		id, port := v, 0
		if host, p, err := net.SplitHostPort(v); err == nil {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return nil, invalid("target", "%q: the port must be within 1-65535", v)
			}
			id, port = host, n
		}
		if port == 0 {
			port = g.Spec().Config.Port
		}
		keys = append(keys, targetgroup.TargetKey{ID: id, Port: port})
	}
	return keys, nil
}
