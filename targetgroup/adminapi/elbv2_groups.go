package adminapi

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// The group operations of ELBv2: CreateTargetGroup, DescribeTargetGroups,
// ModifyTargetGroup, DeleteTargetGroup and the attribute operations. The
// parameters are read and checked against the model's shapes here; the
// rules of the groups themselves are the domain's.

// The model's ranges of the health check parameters.
const (
	elbv2MinInterval, elbv2MaxInterval   = 5, 300
	elbv2MinTimeout, elbv2MaxTimeout     = 2, 120
	elbv2MinThreshold, elbv2MaxThreshold = 2, 10
	elbv2MaxPageSize                     = 400
	elbv2MaxTags                         = 50
)

// group resolves TargetGroupArn (an ARN, or beyond the model an id or a
// name) to a live group.
func (c *elbv2Call) group() (*targetgroup.Group, error) {
	ref, err := c.p.required("TargetGroupArn")
	if err != nil {
		return nil, err
	}
	g, err := c.reg.Lookup(ref)
	if err != nil {
		return nil, elbv2GroupNotFound(ref)
	}
	return g, nil
}

func elbv2GroupNotFound(refs ...string) error {
	return elbv2Fail(elbv2CodeNotFound, "One or more target groups not found: %s (give a target group ARN, id or name)", quoteAll(refs))
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// healthCheck reads the health check parameters that CreateTargetGroup and
// ModifyTargetGroup share, as the fields of the group JSON's health_check
// that were given.
func (c *elbv2Call) healthCheck() (map[string]any, error) {
	p := c.p
	hc := map[string]any{}
	if v := p.optString("HealthCheckProtocol"); v != nil {
		hc["protocol"] = *v
	}
	if v := p.optString("HealthCheckPath"); v != nil {
		if *v == "" || len(*v) > 1024 {
			return nil, elbv2Invalid("HealthCheckPath: must be 1-1024 characters long")
		}
		hc["path"] = *v
	}
	if v := p.optString("HealthCheckPort"); v != nil {
		port, err := targetgroup.ParseHealthCheckPort(*v)
		if err != nil {
			return nil, elbv2Invalid("HealthCheckPort: %q must be traffic-port or a port within 1-65535", *v)
		}
		hc["port"] = port
	}
	enabled, err := p.boolean("HealthCheckEnabled")
	if err != nil {
		return nil, err
	}
	if enabled != nil {
		hc["enabled"] = *enabled
	}
	for _, s := range []struct {
		param, field string
		lo, hi       int
		seconds      bool
	}{
		{"HealthCheckIntervalSeconds", "interval", elbv2MinInterval, elbv2MaxInterval, true},
		{"HealthCheckTimeoutSeconds", "timeout", elbv2MinTimeout, elbv2MaxTimeout, true},
		{"HealthyThresholdCount", "healthy_threshold", elbv2MinThreshold, elbv2MaxThreshold, false},
		{"UnhealthyThresholdCount", "unhealthy_threshold", elbv2MinThreshold, elbv2MaxThreshold, false},
	} {
		n, err := p.intIn(s.param, s.lo, s.hi)
		switch {
		case err != nil:
			return nil, err
		case n == nil:
		case s.seconds:
			hc[s.field] = targetgroup.Duration(time.Duration(*n) * time.Second)
		default:
			hc[s.field] = *n
		}
	}
	httpCode, grpcCode := p.optString("Matcher.HttpCode"), p.optString("Matcher.GrpcCode")
	switch {
	case httpCode != nil && grpcCode != nil:
		return nil, elbv2Invalid("Matcher: give HttpCode or GrpcCode, not both")
	case httpCode != nil:
		hc["matcher"] = targetgroup.MatcherConfig{HTTPCode: *httpCode}
	case grpcCode != nil:
		hc["matcher"] = targetgroup.MatcherConfig{GRPCCode: *grpcCode}
	}
	return hc, nil
}

// tags reads a list of tags, Tags.member.N.{Key,Value}; a key given twice
// is DuplicateTagKeys.
func (c *elbv2Call) tags() (map[string]string, bool, error) {
	members, given, err := c.p.structs("Tags", "Key", "Value")
	if err != nil {
		return nil, false, err
	}
	tags := make(map[string]string, len(members))
	for i, m := range members {
		k, ok := m["Key"]
		if !ok {
			return nil, false, elbv2Missing(memberName("Tags", i, "Key"))
		}
		if _, dup := tags[k]; dup {
			return nil, false, elbv2Fail(elbv2CodeDuplicateTagKeys, "Tags: the key %q is given more than once", k)
		}
		tags[k] = m["Value"]
	}
	if len(tags) > elbv2MaxTags {
		return nil, false, elbv2Fail(elbv2CodeTooManyTags, "Tags: %d tags; a target group has at most %d", len(tags), elbv2MaxTags)
	}
	return tags, given, nil
}

func createELBv2Group(c *elbv2Call) (any, error) {
	p := c.p
	name, err := p.required("Name")
	if err != nil {
		return nil, err
	}
	if _, ok := p.str("TargetControlPort"); ok {
		return nil, elbv2Invalid("TargetControlPort: not supported; Caddy has no target optimizer agent to exchange management traffic with")
	}
	cfg := targetgroup.GroupConfig{Type: "instance"} // the model's default
	if v := p.optString("TargetType"); v != nil {
		cfg.Type = *v
	}
	for param, field := range map[string]*string{"Protocol": &cfg.Protocol, "ProtocolVersion": &cfg.ProtocolVersion, "VpcId": &cfg.VPCID, "IpAddressType": &cfg.IPAddressType} {
		if v := p.optString(param); v != nil {
			*field = *v
		}
	}
	port, err := p.intIn("Port", 1, 65535)
	if err != nil {
		return nil, err
	}
	if port != nil {
		cfg.Port = *port
	}
	hc, err := c.healthCheck()
	if err != nil {
		return nil, err
	}
	if len(hc) > 0 {
		raw, _ := json.Marshal(hc)
		cfg.HealthCheck = new(targetgroup.HealthCheckConfig)
		if err := json.Unmarshal(raw, cfg.HealthCheck); err != nil {
			return nil, elbv2Invalid("%v", err)
		}
	}
	tags, _, err := c.tags()
	if err != nil {
		return nil, err
	}
	if len(tags) > 0 {
		cfg.Tags = tags
	}
	if err := c.done(); err != nil {
		return nil, err
	}
	g, _, err := c.reg.CreateGroup(targetgroup.CreateRequest{Name: name, GroupConfig: cfg, NameRule: targetgroup.ValidateELBv2Name})
	if err != nil {
		return nil, err // quota: TooManyTargetGroups, the kind's own code
	}
	return elbv2Groups{TargetGroups: listOf([]elbv2TargetGroup{elbv2GroupOf(g)})}, nil
}

// describeELBv2Groups answers every group, or those named by Names or
// TargetGroupArns, by name order in pages of PageSize; NextMarker names
// the page after. A LoadBalancerArn names no load balancer that exists:
// Caddy's routes use groups by name, but are no AWS resources, and an
// empty list would tell a script its load balancer has no groups.
func describeELBv2Groups(c *elbv2Call) (any, error) {
	p := c.p
	lb, byLB := p.str("LoadBalancerArn")
	names, byName, err := p.list("Names")
	if err != nil {
		return nil, err
	}
	arns, byARN, err := p.list("TargetGroupArns")
	if err != nil {
		return nil, err
	}
	marker, _ := p.str("Marker")
	size, err := p.intIn("PageSize", 1, elbv2MaxPageSize)
	if err != nil {
		return nil, err
	}
	if err := c.done(); err != nil {
		return nil, err
	}
	given := 0
	for _, b := range []bool{byLB, byName && len(names) > 0, byARN && len(arns) > 0} {
		if b {
			given++
		}
	}
	if given > 1 {
		return nil, elbv2Invalid("LoadBalancerArn, Names and TargetGroupArns: give at most one of them")
	}
	if byLB {
		return nil, elbv2Fail(elbv2CodeLBNotFound, "load balancer %q not found: Caddy has no load balancers as AWS resources (its routes use target groups by name); call DescribeTargetGroups without LoadBalancerArn", lb)
	}
	groups, err := c.pick(append(names, arns...))
	if err != nil {
		return nil, err
	}
	if marker != "" {
		var after string
		if !readPageToken(marker, &after) || after == "" {
			return nil, elbv2Invalid("Marker: %q is not a marker this API answered (give the NextMarker of the previous page)", marker)
		}
		i := sort.Search(len(groups), func(i int) bool { return groups[i].Name() > after })
		groups = groups[i:]
	}
	limit := elbv2MaxPageSize
	if size != nil {
		limit = *size
	}
	out := elbv2Groups{}
	if len(groups) > limit {
		groups = groups[:limit]
		out.NextMarker = pageToken(groups[limit-1].Name())
	}
	members := make([]elbv2TargetGroup, len(groups))
	for i, g := range groups {
		members[i] = elbv2GroupOf(g)
	}
	out.TargetGroups = listOf(members)
	return out, nil
}

// pick returns the groups refs name, sorted by name and each once; no refs
// is every group. A ref naming no group refuses the call.
func (c *elbv2Call) pick(refs []string) ([]*targetgroup.Group, error) {
	if len(refs) == 0 {
		return c.reg.Groups(), nil
	}
	seen := map[string]*targetgroup.Group{}
	var missing []string
	for _, ref := range refs {
		g, err := c.reg.Lookup(ref)
		if err != nil {
			missing = append(missing, ref)
			continue
		}
		seen[g.Name()] = g
	}
	if len(missing) > 0 {
		return nil, elbv2GroupNotFound(missing...)
	}
	out := make([]*targetgroup.Group, 0, len(seen))
	for _, g := range seen {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

func modifyELBv2Group(c *elbv2Call) (any, error) {
	g, err := c.group()
	if err != nil {
		return nil, err
	}
	hc, err := c.healthCheck()
	if err != nil {
		return nil, err
	}
	if err := c.done(); err != nil {
		return nil, err
	}
	if p, ok := hc["protocol"].(string); ok && strings.EqualFold(p, targetgroup.ProtocolTCP) {
		// A TCP check has no path, matcher or protocol version, which the
		// HTTP check it replaces had and the change would otherwise keep;
		// ELBv2 has no parameter for the check's protocol version.
		hc["protocol_version"] = ""
		if _, ok := hc["path"]; !ok {
			hc["path"] = ""
		}
		if _, ok := hc["matcher"]; !ok {
			hc["matcher"] = nil
		}
	}
	raw, _ := json.Marshal(hc)
	if err := c.reg.ModifyHealthCheck(g.Name(), map[string]json.RawMessage{"health_check": raw}); err != nil {
		return nil, err
	}
	return elbv2Groups{TargetGroups: listOf([]elbv2TargetGroup{elbv2GroupOf(g)})}, nil
}

// deleteELBv2Group deletes a group; deleting one that does not exist
// succeeds, as ELBv2's other deletions do (the model gives this one no
// not-found error), so that a cleanup script may run twice.
func deleteELBv2Group(c *elbv2Call) (any, error) {
	ref, err := c.p.required("TargetGroupArn")
	if err != nil {
		return nil, err
	}
	if err := c.done(); err != nil {
		return nil, err
	}
	g, err := c.reg.Lookup(ref)
	if err != nil {
		return elbv2Empty{}, nil
	}
	if err := c.reg.DeleteGroup(g.Name()); err != nil && targetgroup.KindOf(err) != targetgroup.KindNotFound {
		return nil, err
	}
	return elbv2Empty{}, nil
}

func describeELBv2Attributes(c *elbv2Call) (any, error) {
	g, err := c.group()
	if err != nil {
		return nil, err
	}
	if err := c.done(); err != nil {
		return nil, err
	}
	return elbv2Attributes{Attributes: elbv2KeyValues(g.Spec().Config.Attributes)}, nil
}

// modifyELBv2Attributes sets the attributes given and answers all of the
// group's. A value the domain refuses is InvalidConfigurationRequest, the
// one error the model gives this operation beside not found.
func modifyELBv2Attributes(c *elbv2Call) (any, error) {
	g, err := c.group()
	if err != nil {
		return nil, err
	}
	members, _, err := c.p.structs("Attributes", "Key", "Value")
	if err != nil {
		return nil, err
	}
	if len(members) == 0 {
		return nil, elbv2Missing("Attributes (Attributes.member.N.Key and .Value)")
	}
	attrs := make(map[string]string, len(members))
	for i, m := range members {
		k, ok := m["Key"]
		if !ok || k == "" {
			return nil, elbv2Missing(memberName("Attributes", i, "Key"))
		}
		if _, dup := attrs[k]; dup {
			return nil, elbv2Invalid("Attributes: the key %q is given more than once", k)
		}
		attrs[k] = m["Value"]
	}
	if err := c.done(); err != nil {
		return nil, err
	}
	if err := c.reg.ModifyAttributes(g.Name(), attrs); err != nil {
		return nil, elbv2Refine(err, targetgroup.KindValidation, elbv2CodeInvalidConfig)
	}
	return elbv2Attributes{Attributes: elbv2KeyValues(g.Spec().Config.Attributes)}, nil
}
