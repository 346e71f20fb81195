package targetgroup

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
)

// Error is an API error with the AWS error code the admin API answers.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// AWS error codes.
const (
	CodeValidation       = "ValidationException"
	CodeNotFound         = "ResourceNotFoundException"
	CodeConflict         = "ConflictException"
	CodeDuplicateName    = "DuplicateTargetGroupName"
	CodeResourceInUse    = "ResourceInUse"
	CodeNotPermitted     = "OperationNotPermitted"
	CodePayloadTooLarge  = "PayloadTooLarge"
	CodeMethodNotAllowed = "MethodNotAllowed"
	CodeUnavailable      = "ServiceUnavailable"
	CodeInternal         = "InternalServerException"
	CodeQuotaExceeded    = "ServiceQuotaExceededException"
)

func errNotFound(name string) *Error {
	return &Error{http.StatusNotFound, CodeNotFound, fmt.Sprintf("target group %q not found", name)}
}

// asAPIError maps any error to an API error: validation errors are 400s,
// anything unexpected a 500.
func asAPIError(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	if IsValidationError(err) {
		return &Error{http.StatusBadRequest, CodeValidation, err.Error()}
	}
	return &Error{http.StatusInternalServerError, CodeInternal, err.Error()}
}

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
	Target          TargetConfig `json:"target"`
	HealthCheckPort string       `json:"health_check_port"`
	TargetHealth    TargetHealth `json:"target_health"`
	// Requests (HTTP) or connections (layer 4) in flight through this Caddy.
	InFlight int64 `json:"in_flight"`
	// Seconds left of the target's slow start, when it is in slow start.
	SlowStartRemainingSeconds int `json:"slow_start_remaining_seconds,omitempty"`
	// Anomaly detection of weighted_random groups, as AWS reports it.
	AnomalyDetection *AnomalyDetection `json:"anomaly_detection,omitempty"`
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

// Describe returns the group's description. Its targets are the registered
// targets that are not draining.
func (g *Group) Describe() GroupDescription {
	g.mu.Lock()
	defer g.mu.Unlock()
	cfg := g.spec.Config
	cfg.Attributes = cloneMap(cfg.Attributes)
	cfg.Tags = cloneMap(cfg.Tags)
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
func (g *Group) Health() GroupHealth {
	s := g.Snapshot()
	a := s.Spec.Attributes
	h := GroupHealth{Healthy: s.Healthy + s.Unavailable, Unhealthy: s.Unhealthy, Total: s.Total, RoutingFailover: s.FailOpen}
	if a.DNSFailoverCount > 0 && h.Healthy < a.DNSFailoverCount {
		h.DNSFailover = true
	}
	if p := a.DNSFailoverPercentage; p > 0 && h.Healthy*100 < p*h.Total {
		h.DNSFailover = true
	}
	return h
}

// RegisterTargets registers a batch of targets: all of them or, when one is
// invalid, none. Registering a registered target changes nothing;
// registering a draining target brings it back through initial checks.
// It returns once the change is saved.
func (r *Registry) RegisterTargets(name string, targets []TargetConfig) ([]TargetConfig, error) {
	g := r.Group(name)
	if g == nil {
		return nil, errNotFound(name)
	}
	if len(targets) == 0 {
		return nil, fieldErr("targets", "at least one target is required")
	}
	g.apiMu.Lock()
	defer g.apiMu.Unlock()
	g.lock()
	norm, err := g.registerBatch(targets, r.Allowed(), r.Limits())
	var rec groupRecord
	if err == nil {
		rec = g.record()
	}
	g.unlock()
	if err != nil {
		return nil, err
	}
	return norm, r.save(g, rec)
}

// registerBatch validates every target, then registers them. Called with mu held.
func (g *Group) registerBatch(targets []TargetConfig, allowed []netip.Prefix, limits Limits) ([]TargetConfig, error) {
	spec := g.spec
	norm := make([]TargetConfig, len(targets))
	added := map[TargetKey]bool{}
	for i, t := range targets {
		n, err := spec.NormalizeTarget(t, allowed)
		if err != nil {
			return nil, prefixField(fmt.Sprintf("targets[%d]", i), err)
		}
		norm[i] = n
		if cur := g.targets[n.Key()]; cur == nil || cur.state == StateDraining {
			added[n.Key()] = true
		}
	}
	live := 0
	for _, t := range g.targets {
		if t.state != StateDraining {
			live++
		}
	}
	if err := spec.checkTargetCount(live + len(added)); err != nil {
		return nil, err
	}
	if live+len(added) > limits.MaxTargetsPerGroup {
		return nil, errQuota("target group %q would hold %d targets; max_targets_per_group is %d", g.name, live+len(added), limits.MaxTargetsPerGroup)
	}
	for k := range added {
		delete(g.tombstones, k)
	}
	g.register(norm, ownerAPI)
	g.publish()
	return norm, nil
}

func errQuota(format string, args ...any) *Error {
	return &Error{http.StatusBadRequest, CodeQuotaExceeded, fmt.Sprintf(format, args...)}
}

// DeregisterTargets starts draining a batch of targets. Targets that are not
// registered are ignored, as in AWS; targets declared by the config can't be
// deregistered through the API. It returns once the change is saved.
func (r *Registry) DeregisterTargets(name string, targets []TargetConfig) error {
	g := r.Group(name)
	if g == nil {
		return errNotFound(name)
	}
	if len(targets) == 0 {
		return fieldErr("targets", "at least one target is required")
	}
	g.apiMu.Lock()
	defer g.apiMu.Unlock()
	g.lock()
	err := g.deregisterBatch(targets, r.Allowed())
	var rec groupRecord
	if err == nil {
		rec = g.record()
	}
	g.unlock()
	if err != nil {
		return err
	}
	return r.save(g, rec)
}

// deregisterBatch checks every target, then drains them. Called with mu held.
func (g *Group) deregisterBatch(targets []TargetConfig, allowed []netip.Prefix) error {
	keys := make([]TargetKey, len(targets))
	for i, t := range targets {
		if t.ID == "" {
			return fieldErr(fmt.Sprintf("targets[%d].id", i), "required")
		}
		if t.Port < 0 || t.Port > 65535 {
			return fieldErr(fmt.Sprintf("targets[%d].port", i), "%d is outside 1-65535", t.Port)
		}
		n, err := g.spec.NormalizeTarget(t, allowed)
		if err != nil {
			// Not registrable means not registered: nothing to do for it.
			n = t
			if n.Port == 0 {
				n.Port = g.spec.Config.Port
			}
		}
		keys[i] = n.Key()
		if cur := g.targets[keys[i]]; cur != nil && cur.owner == ownerConfig && cur.state != StateDraining {
			return &Error{http.StatusConflict, CodeNotPermitted, fmt.Sprintf("targets[%d]: %s is declared in the config of target group %q; remove it from the config instead", i, keys[i], g.name)}
		}
	}
	g.deregister(keys)
	g.publish()
	return nil
}
