package targetgroup

import (
	"maps"
	"math"
	"strconv"
	"strings"
)

// GroupDescription is a group as the API describes it: the effective group
// JSON plus its identity.
type GroupDescription struct {
	Name   string `json:"name"`
	ID     string `json:"id"`
	ARN    string `json:"arn"`
	Status string `json:"status"`
	Source string `json:"source"`
	GroupConfig
}

// TargetHealthDescription is one entry of DescribeTargetHealth.
type TargetHealthDescription struct {
	Target TargetConfig `json:"target"`
	// Absent for lambda targets, which have no port, as in AWS.
	HealthCheckPort string       `json:"health_check_port,omitempty"`
	TargetHealth    TargetHealth `json:"target_health"`
	// Requests (HTTP) or connections (layer 4) in flight through this Caddy.
	InFlight int64 `json:"in_flight"`
	// Seconds left of the target's slow start, when it is in slow start.
	SlowStartRemainingSeconds int `json:"slow_start_remaining_seconds,omitempty"`
	// Anomaly detection of weighted_random groups, as AWS reports it.
	AnomalyDetection *AnomalyDetection `json:"anomaly_detection,omitempty"`
	// With ?scope=cluster: the state every node of the fleet sees, this
	// node first.
	Nodes []NodeTargetState `json:"nodes,omitempty"`
}

// AnomalyDetection says whether a target's error rate or latency stands
// out from the others', and whether its share of traffic is lowered.
type AnomalyDetection struct {
	Result             string `json:"result"`               // anomalous or normal
	MitigationInEffect string `json:"mitigation_in_effect"` // yes or no
}

// TargetHealth is a target's state with its AWS reason code.
type TargetHealth struct {
	State       State  `json:"state"`
	Reason      string `json:"reason"`
	Description string `json:"description"`
}

// GroupHealth is the target-group health of the NLB document.
type GroupHealth struct {
	Healthy         int  `json:"healthy"`
	Unhealthy       int  `json:"unhealthy"`
	Total           int  `json:"total"`
	RoutingFailover bool `json:"routing_failover"`
	DNSFailover     bool `json:"dns_failover"`
}

// Lookup returns the group that ref names — by its name, its id or one of
// its ARNs — or a KindNotFound error naming ref.
func (r *Registry) Lookup(ref string) (*Group, error) {
	name := ref
	if g := r.Group(ref); g != nil {
		return g, nil
	}
	if validGroupID(ref) || strings.HasPrefix(ref, "arn:") {
		for _, g := range r.Groups() {
			if g.id == ref || g.ARN() == ref || g.LatticeARN() == ref {
				return g, nil
			}
		}
	}
	return nil, errNotFound(name)
}

// Describe returns the group's description. Its targets are the registered
// targets that are not draining.
func (g *Group) Describe() GroupDescription {
	g.mu.Lock()
	defer g.mu.Unlock()
	cfg := g.spec.Config
	cfg.Attributes = maps.Clone(cfg.Attributes)
	cfg.Tags = maps.Clone(cfg.Tags)
	cfg.Targets = []TargetConfig{}
	for _, t := range g.sortedTargets() {
		if t.state != StateDraining {
			cfg.Targets = append(cfg.Targets, t.cfg)
		}
	}
	return GroupDescription{Name: g.name, ID: g.id, ARN: g.ARN(), Status: "ACTIVE", Source: g.source, GroupConfig: cfg}
}

// DescribeTargetHealth reports every registered target, draining ones
// included; given keys, it reports those targets only, and a target that is
// not registered as unused (Target.NotRegistered).
func (g *Group) DescribeTargetHealth(keys ...TargetKey) []TargetHealthDescription {
	g.mu.Lock()
	defer g.mu.Unlock()
	ts := g.sortedTargets()
	if len(keys) > 0 {
		ts = make([]*Target, 0, len(keys))
		for _, k := range keys {
			t := g.targets[k]
			if t == nil {
				t = &Target{cfg: TargetConfig{ID: k.ID, Port: k.Port}, state: StateUnused, reason: ReasonNotRegistered, description: "Target is not registered to the target group"}
			}
			ts = append(ts, t)
		}
	}
	out := make([]TargetHealthDescription, 0, len(ts))
	now := g.reg.clock.Now()
	for _, t := range ts {
		port := strconv.Itoa(t.cfg.Port)
		if p := g.spec.HealthCheck.Port; p != 0 {
			port = strconv.Itoa(p)
		}
		if g.spec.Config.Type == TypeLambda {
			port = ""
		}
		d := TargetHealthDescription{
			Target:          t.cfg,
			HealthCheckPort: port,
			TargetHealth:    TargetHealth{State: t.state, Reason: t.reason, Description: t.description},
			InFlight:        t.inflight.Load(),
		}
		if g.spec.Attributes.Algorithm == AlgorithmWeightedRandom {
			anomalous, mitigated := t.stats.Anomaly()
			d.AnomalyDetection = &AnomalyDetection{Result: "normal", MitigationInEffect: "no"}
			if anomalous {
				d.AnomalyDetection.Result = "anomalous"
			}
			if mitigated || t.multiplier() < 1 {
				d.AnomalyDetection.MitigationInEffect = "yes"
			}
		}
		if dur := g.spec.Attributes.SlowStart; t.state == StateHealthy && t.inSlowStart(now, dur) {
			d.SlowStartRemainingSeconds = int(math.Ceil((dur - now.Sub(t.slowStartSince)).Seconds()))
		}
		out = append(out, d)
	}
	return out
}

// Health reports the group's health against its target_group_health
// thresholds: routing failover (traffic goes to unhealthy targets too) and
// DNS failover (a DNS health check should steer clients away).
func (g *Group) Health() GroupHealth { return g.Snapshot().health() }

func (s *Snapshot) health() GroupHealth {
	a := s.Spec.Attributes
	h := GroupHealth{Healthy: s.Healthy + s.Unavailable, Unhealthy: s.Unhealthy, Total: s.Total, RoutingFailover: s.FailOpen}
	// NLB: "a target group is considered healthy as long as it has at least
	// one healthy target" — an empty group too is unhealthy. The thresholds
	// can only make it stricter.
	if h.Healthy == 0 {
		h.DNSFailover = true
	}
	if a.DNSFailoverCount > 0 && h.Healthy < a.DNSFailoverCount {
		h.DNSFailover = true
	}
	if p := a.DNSFailoverPercentage; p > 0 && h.Healthy*100 < p*h.Total {
		h.DNSFailover = true
	}
	return h
}
