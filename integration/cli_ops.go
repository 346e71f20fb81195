package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// cliOperations are the commands of `caddy target-groups`, but wait.
func cliOperations() []cliOp {
	return []cliOp{
		{
			name:  "describe-target-groups",
			short: "Describes target groups (DescribeTargetGroups)",
			long:  "Describes every target group, or those --names or --target-group-arns (ids or ARNs) name.",
			flags: func(fs *pflag.FlagSet) {
				fs.StringArray("names", nil, "`names` of the groups to describe (several after one flag, or a,b)")
				fs.StringArray("target-group-arns", nil, "ARNs or ids of the groups to describe (several after one flag, or a,b)")
			},
			run: describeTargetGroupsCmd,
		},
		{
			name:  "create-target-group",
			short: "Creates a target group (CreateTargetGroup)",
			long:  "Creates a target group owned by the API. Unset flags take the defaults of the AWS documents.",
			flags: func(fs *pflag.FlagSet) {
				fs.String("name", "", "the group's name (required)")
				fs.String("protocol", "", "HTTP (default), HTTPS, or for layer 4 TCP, TLS, UDP, TCP_UDP")
				fs.String("protocol-version", "", "HTTP1 (default), HTTP2 or GRPC")
				fs.Int("port", 0, "the port of targets registered without one")
				fs.String("target-type", "", "ip (default), instance, alb or lambda")
				fs.String("ip-address-type", "", "ipv4 (default) or ipv6")
				healthCheckFlags(fs)
				fs.StringArray("attributes", nil, "attributes, `Key=...`,Value=... (several after one flag)")
				fs.StringArray("tags", nil, "tags, `Key=...`,Value=... (several after one flag)")
				fs.String("client-token", "", "makes the call idempotent: repeating it with the same token changes nothing")
			},
			run: createTargetGroupCmd,
		},
		{
			name: "modify-target-group", group: true,
			short: "Changes a group's health check settings (ModifyTargetGroup)",
			long:  "Changes the health check settings given; the others keep their values.",
			flags: healthCheckFlags,
			run:   modifyTargetGroupCmd,
		},
		{
			name: "delete-target-group", group: true,
			short: "Deletes a target group (DeleteTargetGroup)",
			long:  "Deletes a target group created through the API; its targets drain. Refused while a route uses it.",
			run:   deleteTargetGroupCmd,
		},
		{
			name: "describe-target-group-attributes", group: true,
			short: "Describes a group's attributes (DescribeTargetGroupAttributes)",
			run:   describeAttributesCmd,
		},
		{
			name: "modify-target-group-attributes", group: true,
			short: "Changes a group's attributes (ModifyTargetGroupAttributes)",
			long:  "Sets the attributes given; the others keep their values.",
			flags: func(fs *pflag.FlagSet) {
				fs.StringArray("attributes", nil, "attributes, `Key=...`,Value=... (several after one flag; required)")
			},
			run: modifyAttributesCmd,
		},
		{
			name: "register-targets", group: true,
			short: "Registers targets (RegisterTargets)",
			long:  "Registers targets with a group; re-registering a registered target changes nothing. A batch is all or nothing.",
			flags: func(fs *pflag.FlagSet) {
				fs.StringArray("targets", nil, "targets, `Id=...`,Port=...,AvailabilityZone=...,Weight=... (Id required; several after one flag; required)")
			},
			run: targetsCmd("RegisterTargets", "/targets"),
		},
		{
			name: "deregister-targets", group: true,
			short: "Deregisters targets (DeregisterTargets)",
			long:  "Deregisters targets; they drain for the group's deregistration delay. Deregistering a target that is not registered changes nothing.",
			flags: func(fs *pflag.FlagSet) {
				fs.StringArray("targets", nil, "targets, `Id=...`,Port=... (several after one flag; required)")
			},
			run: targetsCmd("DeregisterTargets", "/targets/deregister"),
		},
		{
			name: "describe-target-health", group: true,
			short: "Describes the health of a group's targets (DescribeTargetHealth)",
			long:  "Describes every registered target (draining ones included), or those --targets names; one that is not registered is unused (Target.NotRegistered).",
			flags: func(fs *pflag.FlagSet) {
				fs.StringArray("targets", nil, "targets, `Id=...`,Port=... (several after one flag; default: every target)")
			},
			run: describeTargetHealthCmd,
		},
	}
}

// healthCheckFlags declares the flags of a group's health check.
func healthCheckFlags(fs *pflag.FlagSet) {
	fs.String("health-check-protocol", "", "HTTP, HTTPS or TCP")
	fs.String("health-check-port", "", "traffic-port or a port number")
	fs.String("health-check-path", "", "the path of HTTP/HTTPS checks, or the gRPC method")
	fs.Bool("health-check-enabled", false, "turns health checks on")
	fs.Bool("no-health-check-enabled", false, "turns health checks off")
	fs.Int("health-check-interval-seconds", 0, "seconds between two checks of a target (5-300)")
	fs.Int("health-check-timeout-seconds", 0, "seconds after which a check fails (1-120)")
	fs.Int("healthy-threshold-count", 0, "consecutive passes that make a target healthy (2-10)")
	fs.Int("unhealthy-threshold-count", 0, "consecutive failures that make a target unhealthy (2-10)")
	fs.String("matcher", "", "success codes, `HttpCode=...` or GrpcCode=... (200, 200,202, 200-299)")
}

// healthCheckBody is the health_check object the flags set, or nil.
func (c *cliCall) healthCheckBody() (map[string]any, error) {
	hc := map[string]any{}
	if c.set("health-check-enabled") && c.set("no-health-check-enabled") {
		return nil, paramErrorf("--health-check-enabled and --no-health-check-enabled exclude each other")
	}
	if c.set("health-check-enabled") {
		hc["enabled"] = true
	}
	if c.set("no-health-check-enabled") {
		hc["enabled"] = false
	}
	for flag, field := range map[string]string{"health-check-protocol": "protocol", "health-check-path": "path"} {
		if c.set(flag) {
			hc[field] = c.str(flag)
		}
	}
	if c.set("health-check-port") {
		p := c.str("health-check-port")
		if n, err := strconv.Atoi(p); err == nil {
			hc["port"] = n
		} else {
			hc["port"] = p
		}
	}
	for flag, field := range map[string]string{"health-check-interval-seconds": "interval", "health-check-timeout-seconds": "timeout"} {
		if c.set(flag) {
			hc[field] = strconv.Itoa(c.num(flag)) + "s"
		}
	}
	for flag, field := range map[string]string{"healthy-threshold-count": "healthy_threshold", "unhealthy-threshold-count": "unhealthy_threshold"} {
		if c.set(flag) {
			hc[field] = c.num(flag)
		}
	}
	if c.set("matcher") {
		m, err := parseStructs("matcher", []string{c.str("matcher")}, matcherMembers)
		if err != nil {
			return nil, err
		}
		if len(m) != 1 || len(m[0]) == 0 {
			return nil, paramErrorf("Error parsing parameter '--matcher': one of HttpCode or GrpcCode is required")
		}
		hc["matcher"] = m[0]
	}
	if len(hc) == 0 {
		return nil, nil
	}
	return hc, nil
}

// keyValues reads a list flag of Key=…,Value=… pairs into a map.
func (c *cliCall) keyValues(flag string) (map[string]string, error) {
	kvs, err := parseStructs(flag, c.list(flag), keyValueMembers)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, kok := kv["key"].(string)
		v, vok := kv["value"].(string)
		if !kok || !vok {
			return nil, paramErrorf("Error parsing parameter '--%s': every element needs Key and Value", flag)
		}
		out[k] = v
	}
	return out, nil
}

func describeTargetGroupsCmd(c *cliCall) error {
	raw, err := c.do(http.MethodGet, "/target-groups/", nil)
	if err != nil {
		return err
	}
	names, refs := splitCommas(c.list("names")), splitCommas(c.list("target-group-arns"))
	// The admin API knows every form of a reference (id, either ARN).
	refIDs := make(map[string]string, len(refs))
	for _, ref := range refs {
		one, err := c.do(http.MethodGet, groupPath(ref), nil)
		if err != nil {
			return err
		}
		var g cliGroup
		if err := json.Unmarshal(one, &g); err != nil {
			return badAnswer(err)
		}
		refIDs[ref] = g.ID
	}
	var all struct {
		TargetGroups []json.RawMessage `json:"target_groups"`
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		return badAnswer(err)
	}
	picked := []json.RawMessage{}
	var groups []cliGroup
	found := map[string]bool{}
	for _, r := range all.TargetGroups {
		var g cliGroup
		if err := json.Unmarshal(r, &g); err != nil {
			return badAnswer(err)
		}
		match := len(names) == 0 && len(refs) == 0
		for _, n := range names {
			if n == g.Name {
				match, found[n] = true, true
			}
		}
		for _, ref := range refs {
			if refIDs[ref] == g.ID {
				match, found[ref] = true, true
			}
		}
		if match {
			picked, groups = append(picked, r), append(groups, g)
		}
	}
	for _, want := range append(slices.Clone(names), refs...) {
		if !found[want] {
			return &cliError{"ResourceNotFoundException", fmt.Sprintf("target group %q not found", want)}
		}
	}
	if c.output == "json" {
		return c.printJSON(map[string]any{"target_groups": picked})
	}
	t := table{title: "DescribeTargetGroups", header: []string{"Name", "Id", "Protocol", "Port", "TargetType", "HealthCheck", "Interval", "Targets", "Source"}}
	for _, g := range groups {
		t.rows = append(t.rows, []string{g.Name, g.ID, g.protocol(), portText(g.Port), g.Type, g.healthCheckSummary(), g.HealthCheck.Interval, strconv.Itoa(len(g.Targets)), g.Source})
	}
	t.write(c.out)
	return nil
}

func createTargetGroupCmd(c *cliCall) error {
	if c.str("name") == "" {
		return paramErrorf("--name is required")
	}
	body := map[string]any{"name": c.str("name")}
	for flag, field := range map[string]string{"protocol": "protocol", "protocol-version": "protocol_version", "target-type": "type", "ip-address-type": "ip_address_type", "client-token": "client_token"} {
		if c.set(flag) {
			body[field] = c.str(flag)
		}
	}
	if c.set("port") {
		body["port"] = c.num("port")
	}
	hc, err := c.healthCheckBody()
	if err != nil {
		return err
	}
	if hc != nil {
		body["health_check"] = hc
	}
	for _, flag := range []string{"attributes", "tags"} {
		if c.set(flag) {
			kv, err := c.keyValues(flag)
			if err != nil {
				return err
			}
			body[flag] = kv
		}
	}
	raw, err := c.do(http.MethodPost, "/target-groups/", body)
	if err != nil {
		return err
	}
	return c.printGroup("CreateTargetGroup", raw)
}

func modifyTargetGroupCmd(c *cliCall) error {
	name, err := c.group()
	if err != nil {
		return err
	}
	hc, err := c.healthCheckBody()
	if err != nil {
		return err
	}
	if hc == nil {
		hc = map[string]any{}
	}
	raw, err := c.do(http.MethodPatch, groupPath(name), map[string]any{"health_check": hc})
	if err != nil {
		return err
	}
	return c.printGroup("ModifyTargetGroup", raw)
}

func deleteTargetGroupCmd(c *cliCall) error {
	name, err := c.group()
	if err != nil {
		return err
	}
	raw, err := c.do(http.MethodDelete, groupPath(name), nil)
	if err != nil {
		return err
	}
	if c.output == "json" {
		return c.printRaw(raw)
	}
	return nil // the AWS CLI prints nothing either
}

func describeAttributesCmd(c *cliCall) error {
	name, err := c.group()
	if err != nil {
		return err
	}
	raw, err := c.do(http.MethodGet, groupPath(name)+"/attributes", nil)
	if err != nil {
		return err
	}
	return c.printAttributes("DescribeTargetGroupAttributes", raw)
}

func modifyAttributesCmd(c *cliCall) error {
	name, err := c.group()
	if err != nil {
		return err
	}
	if !c.set("attributes") {
		return paramErrorf("--attributes is required")
	}
	attrs, err := c.keyValues("attributes")
	if err != nil {
		return err
	}
	raw, err := c.do(http.MethodPatch, groupPath(name)+"/attributes", map[string]any{"attributes": attrs})
	if err != nil {
		return err
	}
	return c.printAttributes("ModifyTargetGroupAttributes", raw)
}

// targetsCmd is RegisterTargets or DeregisterTargets, at path below the group.
func targetsCmd(op, path string) func(c *cliCall) error {
	return func(c *cliCall) error {
		name, err := c.group()
		if err != nil {
			return err
		}
		if !c.set("targets") {
			return paramErrorf("--targets is required")
		}
		ts, err := parseStructs("targets", c.list("targets"), targetMembers)
		if err != nil {
			return err
		}
		raw, err := c.do(http.MethodPost, groupPath(name)+path, map[string]any{"targets": ts})
		if err != nil {
			return err
		}
		return c.printHealth(op, raw)
	}
}

func describeTargetHealthCmd(c *cliCall) error {
	name, err := c.group()
	if err != nil {
		return err
	}
	raw, err := c.describeHealth(name)
	if err != nil {
		return err
	}
	return c.printHealth("DescribeTargetHealth", raw)
}

// describeHealth calls DescribeTargetHealth for the targets of --targets
// (every target without it).
func (c *cliCall) describeHealth(name string) ([]byte, error) {
	path, err := c.healthPath(name)
	if err != nil {
		return nil, err
	}
	return c.do(http.MethodGet, path, nil)
}

// healthPath is the path of DescribeTargetHealth for the targets of
// --targets: ?target=<id>[:<port>] for each.
func (c *cliCall) healthPath(name string) (string, error) {
	ts, err := parseStructs("targets", c.list("targets"), targetMembers)
	if err != nil {
		return "", err
	}
	q := url.Values{}
	for _, t := range ts {
		id, _ := t["id"].(string)
		if p, ok := t["port"].(int); ok {
			id = net.JoinHostPort(id, strconv.Itoa(p))
		}
		q.Add("target", id)
	}
	path := groupPath(name) + "/targets"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return path, nil
}

// splitCommas reads a list of strings as the AWS CLI's shorthand does:
// a b, or a,b.
func splitCommas(values []string) []string {
	var out []string
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

func groupPath(name string) string { return "/target-groups/" + url.PathEscape(name) }
