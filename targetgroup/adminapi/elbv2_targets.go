package adminapi

import (
	"errors"
	"strconv"
	"strings"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// The target operations of ELBv2: RegisterTargets, DeregisterTargets and
// DescribeTargetHealth.

// targets reads Targets.member.N.{Id,Port,AvailabilityZone}. A lambda
// group's target is its function's name or ARN, without a port.
func (c *elbv2Call) targets(required bool) ([]targetgroup.TargetConfig, error) {
	members, given, err := c.p.structs("Targets", "Id", "Port", "AvailabilityZone", "QuicServerId")
	if err != nil {
		return nil, err
	}
	if required && !given {
		return nil, elbv2Missing("Targets (Targets.member.N.Id, .Port, .AvailabilityZone)")
	}
	if required && len(members) == 0 {
		return nil, elbv2Invalid("Targets: at least one target is required")
	}
	ts := make([]targetgroup.TargetConfig, len(members))
	for i, m := range members {
		if _, ok := m["QuicServerId"]; ok {
			return nil, elbv2Fail(elbv2CodeInvalidTarget, "%s: not supported; Caddy's groups have no QUIC protocols", memberName("Targets", i, "QuicServerId"))
		}
		id, ok := m["Id"]
		if !ok || id == "" {
			return nil, elbv2Missing(memberName("Targets", i, "Id"))
		}
		ts[i] = targetgroup.TargetConfig{ID: id, AvailabilityZone: m["AvailabilityZone"]}
		if v, ok := m["Port"]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				return nil, elbv2Fail(elbv2CodeInvalidTarget, "%s: %q must be a port within 1-65535", memberName("Targets", i, "Port"), v)
			}
			ts[i].Port = n
		}
	}
	return ts, nil
}

// elbv2TargetError answers the domain's refusal of a batch of targets: a
// wrong target is InvalidTarget, one too many (the quota, or the single
// target of a lambda or alb group) TooManyTargets.
func elbv2TargetError(err error) error {
	var ve *targetgroup.ValidationError
	if errors.As(err, &ve) {
		switch {
		case ve.Field == "targets":
			return elbv2Fail(elbv2CodeTooManyTargets, "%s", elbv2FieldMessage(ve))
		case strings.HasPrefix(ve.Field, "targets"):
			return elbv2Fail(elbv2CodeInvalidTarget, "%s", elbv2FieldMessage(ve))
		}
	}
	return elbv2Refine(err, targetgroup.KindQuota, elbv2CodeTooManyTargets)
}

// registerELBv2Targets registers all the targets or, when one is refused,
// none.
func registerELBv2Targets(c *elbv2Call) (any, error) {
	return c.changeTargets(func(group string, ts []targetgroup.TargetConfig) error {
		_, err := c.reg.RegisterTargets(group, ts)
		return err
	})
}

// deregisterELBv2Targets starts draining the targets; one that is not
// registered is no error, as the model says.
func deregisterELBv2Targets(c *elbv2Call) (any, error) {
	return c.changeTargets(c.reg.DeregisterTargets)
}

// changeTargets applies op to the group and the Targets the call names.
func (c *elbv2Call) changeTargets(op func(group string, ts []targetgroup.TargetConfig) error) (any, error) {
	g, err := c.group()
	if err != nil {
		return nil, err
	}
	ts, err := c.targets(true)
	if err != nil {
		return nil, err
	}
	if err := c.done(); err != nil {
		return nil, err
	}
	if err := op(g.Name(), ts); err != nil {
		return nil, elbv2TargetError(err)
	}
	return elbv2Empty{}, nil
}

// describeELBv2TargetHealth reports every target, or those Targets names
// (one not registered as unused, Target.NotRegistered, which the
// TargetDeregistered waiter waits for). Anomaly detection, which only
// weighted_random groups have, is answered only when Include asks for it,
// as AWS does; All adds the administrative override, which Caddy never
// has.
func describeELBv2TargetHealth(c *elbv2Call) (any, error) {
	g, err := c.group()
	if err != nil {
		return nil, err
	}
	ts, err := c.targets(false)
	if err != nil {
		return nil, err
	}
	include, _, err := c.p.list("Include")
	if err != nil {
		return nil, err
	}
	anomaly, override := false, false
	for i, v := range include {
		switch v {
		case "AnomalyDetection":
			anomaly = true
		case "All":
			anomaly, override = true, true
		default:
			return nil, elbv2Invalid("%s: %q must be AnomalyDetection or All", memberName("Include", i, ""), v)
		}
	}
	if err := c.done(); err != nil {
		return nil, err
	}
	spec := g.Spec()
	keys := make([]targetgroup.TargetKey, len(ts))
	for i, t := range ts {
		if t.Port == 0 && spec.Config.Type != targetgroup.TypeLambda {
			t.Port = spec.Config.Port
		}
		keys[i] = t.Key()
	}
	ds := g.DescribeTargetHealth(keys...)
	out := make([]elbv2TargetHealthDescription, len(ds))
	for i, d := range ds {
		e := elbv2TargetHealthDescription{
			Target:       elbv2Target{Id: d.Target.ID, Port: d.Target.Port, AvailabilityZone: d.Target.AvailabilityZone},
			TargetHealth: elbv2TargetHealth{State: string(d.TargetHealth.State), Reason: d.TargetHealth.Reason, Description: d.TargetHealth.Description},
		}
		e.HealthCheckPort = d.HealthCheckPort // absent for lambda targets
		if anomaly && d.AnomalyDetection != nil {
			e.AnomalyDetection = &elbv2Anomaly{Result: d.AnomalyDetection.Result, MitigationInEffect: d.AnomalyDetection.MitigationInEffect}
		}
		if override {
			e.AdministrativeOverride = &elbv2Override{State: "no_override", Reason: "AdministrativeOverride.NoOverride", Description: "No override is currently active on target"}
		}
		out[i] = e
	}
	return elbv2TargetHealthResult{TargetHealthDescriptions: listOf(out)}, nil
}
