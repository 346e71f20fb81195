package adminapi

import (
	"strings"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// The tag operations of ELBv2: AddTags, RemoveTags and DescribeTags, of
// target groups, the only ELBv2 resources Caddy has.

// elbv2MaxResources bounds DescribeTags' ResourceArns, as the model does.
const elbv2MaxResources = 20

// resources resolves ResourceArns to groups, every one of them or none. An
// ARN of another ELBv2 resource is refused with that resource's
// not-found error, which is what a client catching it expects.
func (c *elbv2Call) resources(limit int) ([]*targetgroup.Group, error) {
	arns, given, err := c.p.list("ResourceArns")
	if err != nil {
		return nil, err
	}
	if !given || len(arns) == 0 {
		return nil, elbv2Missing("ResourceArns (ResourceArns.member.N)")
	}
	if limit > 0 && len(arns) > limit {
		return nil, elbv2Invalid("ResourceArns: %d resources; give at most %d in one call", len(arns), limit)
	}
	groups := make([]*targetgroup.Group, len(arns))
	for i, arn := range arns {
		g, err := c.reg.Lookup(arn)
		if err != nil {
			return nil, elbv2ResourceNotFound(arn)
		}
		groups[i] = g
	}
	return groups, nil
}

func elbv2ResourceNotFound(arn string) error {
	for _, r := range []struct{ kind, code, what string }{
		{":loadbalancer/", elbv2CodeLBNotFound, "load balancer"},
		{":listener/", elbv2CodeListenerNotFound, "listener"},
		{":listener-rule/", elbv2CodeRuleNotFound, "rule"},
		{":truststore/", elbv2CodeTrustStoreMissing, "trust store"},
	} {
		if strings.Contains(arn, r.kind) {
			return elbv2Fail(r.code, "%s %q not found: Caddy's only ELBv2 resources are target groups", r.what, arn)
		}
	}
	return elbv2GroupNotFound(arn)
}

// elbv2TagsWritable refuses, before any group changes, a group whose tags
// the config owns: the groups are changed one by one, so that a call
// naming such a group after another would otherwise change the first.
func elbv2TagsWritable(groups []*targetgroup.Group) error {
	for _, g := range groups {
		if g.Source() == targetgroup.SourceConfig {
			return elbv2Fail(elbv2CodeNotPermitted, "target group %q is declared in the config, which owns its tags: change it in the config (the target_groups global option, or /config/apps/target_groups/groups/%s) and reload", g.Name(), g.Name())
		}
	}
	return nil
}

// addELBv2Tags adds or overwrites tags. Each group's tag count is checked
// before any group changes, so that a call over the quota changes none.
func addELBv2Tags(c *elbv2Call) (any, error) {
	groups, err := c.resources(0)
	if err != nil {
		return nil, err
	}
	tags, given, err := c.tags()
	if err != nil {
		return nil, err
	}
	if !given || len(tags) == 0 {
		return nil, elbv2Missing("Tags (Tags.member.N.Key and .Value)")
	}
	if err := c.done(); err != nil {
		return nil, err
	}
	if err := elbv2TagsWritable(groups); err != nil {
		return nil, err
	}
	for _, g := range groups {
		have := g.Describe().Tags
		n := len(have)
		for k := range tags {
			if _, ok := have[k]; !ok {
				n++
			}
		}
		if n > elbv2MaxTags {
			return nil, elbv2Fail(elbv2CodeTooManyTags, "target group %q would have %d tags; a target group has at most %d", g.Name(), n, elbv2MaxTags)
		}
	}
	for _, g := range groups {
		if err := c.reg.ModifyTags(g.Name(), tags, nil); err != nil {
			return nil, err
		}
	}
	return elbv2Empty{}, nil
}

// removeELBv2Tags removes tag keys; a key a group does not have is no
// error.
func removeELBv2Tags(c *elbv2Call) (any, error) {
	groups, err := c.resources(0)
	if err != nil {
		return nil, err
	}
	keys, given, err := c.p.list("TagKeys")
	if err != nil {
		return nil, err
	}
	if !given || len(keys) == 0 {
		return nil, elbv2Missing("TagKeys (TagKeys.member.N)")
	}
	if err := c.done(); err != nil {
		return nil, err
	}
	if err := elbv2TagsWritable(groups); err != nil {
		return nil, err
	}
	for _, g := range groups {
		if err := c.reg.ModifyTags(g.Name(), nil, keys); err != nil {
			return nil, err
		}
	}
	return elbv2Empty{}, nil
}

func describeELBv2Tags(c *elbv2Call) (any, error) {
	groups, err := c.resources(elbv2MaxResources)
	if err != nil {
		return nil, err
	}
	if err := c.done(); err != nil {
		return nil, err
	}
	out := make([]elbv2TagDescription, len(groups))
	for i, g := range groups {
		out[i] = elbv2TagDescription{ResourceArn: g.ARN(), Tags: elbv2KeyValues(g.Describe().Tags)}
	}
	return elbv2TagsResult{TagDescriptions: listOf(out)}, nil
}
