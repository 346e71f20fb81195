package targetgroup

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"time"
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
	// A change that could not be written to storage, or that could
	// overwrite a stored record not read yet: refused, nothing changed.
	CodeStorageUnavailable = "StorageUnavailable"
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

// RegisterTargets registers a batch of targets: all of them or, when one is
// invalid, none. Registering a registered target changes nothing (an API
// target may be given a new zone or weight; a config target's are the
// config's); registering a draining target brings it back through initial
// checks. The change is stored first and takes effect only once stored, so
// a refused call — storage unavailable included — changes nothing.
func (r *Registry) RegisterTargets(name string, targets []TargetConfig) ([]TargetConfig, error) {
	if r.Group(name) == nil {
		return nil, errNotFound(name)
	}
	if len(targets) == 0 {
		return nil, fieldErr("targets", "at least one target is required")
	}
	defer r.names.lock(name)()
	g := r.Group(name)
	if g == nil {
		return nil, errNotFound(name)
	}
	if err := r.restoring.writable(name); err != nil {
		return nil, err
	}
	g.lock()
	b := r.basis(g)
	plan, err := g.registerBatch(targets, *b.allowed, *b.limits)
	var rec groupRecord
	if err == nil && len(plan.put) > 0 {
		rec = g.record().with(plan.put, nil)
	}
	own := g.version.Load()
	g.unlock()
	if err != nil {
		return nil, err
	}
	if len(plan.put) == 0 {
		return plan.norm, nil // registered as asked already: nothing to store
	}
	v, err := r.save(rec, own)
	if err != nil {
		return nil, err
	}
	g.lock()
	stale := r.basis(g) != b
	if stale {
		if g.closed {
			g.unlock()
			return nil, errNotFound(name)
		}
		if plan, err = g.registerBatch(targets, r.Allowed(), r.Limits()); err != nil {
			g.unlock()
			r.rewrite(g)
			return nil, err
		}
	}
	g.version.Store(v)
	for _, t := range plan.put {
		delete(g.tombstones, t.Key())
	}
	g.register(plan.put, ownerAPI)
	g.publish()
	g.unlock()
	if stale {
		r.rewrite(g)
	}
	return plan.norm, nil
}

// registration is what a RegisterTargets call changes.
type registration struct {
	norm []TargetConfig // the call's targets, normalised (port filled in)
	put  []TargetConfig // those to register or update, one per target
}

// registerBatch validates every target against the group as it is and
// works out what registering them changes; it changes nothing. Called with
// mu held.
func (g *Group) registerBatch(targets []TargetConfig, allowed []netip.Prefix, limits Limits) (registration, error) {
	spec := g.spec
	norm := make([]TargetConfig, len(targets))
	last := make(map[TargetKey]int, len(targets))
	for i, t := range targets {
		n, err := spec.NormalizeTarget(t, allowed)
		if err != nil {
			return registration{}, prefixField(fmt.Sprintf("targets[%d]", i), err)
		}
		if cur := g.targets[n.Key()]; cur != nil && cur.owner == ownerConfig && cur.state != StateDraining {
			if err := errConfigTarget(g.name, i, cur.cfg, n); err != nil {
				return registration{}, err
			}
		}
		norm[i] = n
		last[n.Key()] = i
	}
	var put []TargetConfig
	added, revived := 0, 0
	for i, n := range norm {
		if last[n.Key()] != i {
			continue // a later entry of the call wins, as a later call would
		}
		switch cur := g.targets[n.Key()]; {
		case cur == nil:
			added++
		case cur.state == StateDraining:
			revived++
		case cur.owner == ownerConfig || sameRegistration(cur.cfg, n):
			continue // nothing to change
		}
		put = append(put, n)
	}
	live := 0
	for _, t := range g.targets {
		if t.state != StateDraining {
			live++
		}
	}
	if err := spec.checkTargetCount(live + added + revived); err != nil {
		return registration{}, err
	}
	// Draining targets count: each holds memory, a timer and a tombstone in
	// the record until its delay ends, so register/deregister cycles must
	// not grow a group past the quota.
	if total := len(g.targets) + added; total > limits.MaxTargetsPerGroup {
		return registration{}, errQuota("target group %q would hold %d targets, %d of them draining; max_targets_per_group is %d, and draining targets count until their deregistration delay ends",
			g.name, total, len(g.targets)-live, limits.MaxTargetsPerGroup)
	}
	return registration{norm: norm, put: put}, nil
}

// sameRegistration reports whether registering want changes nothing of
// cur: the same zone and the same weight (absent meaning 1).
func sameRegistration(cur, want TargetConfig) bool {
	return cur.AvailabilityZone == want.AvailabilityZone && max(cur.Weight, 1) == max(want.Weight, 1)
}

// errConfigTarget refuses to change, through the API, a target the config
// declares; registering it again as the config has it changes nothing.
func errConfigTarget(group string, i int, cur, want TargetConfig) error {
	var field, have, asked string
	switch {
	case cur.AvailabilityZone != want.AvailabilityZone:
		field, have, asked = "availability_zone", strconv.Quote(cur.AvailabilityZone), strconv.Quote(want.AvailabilityZone)
	case max(cur.Weight, 1) != max(want.Weight, 1):
		field, have, asked = "weight", strconv.Itoa(max(cur.Weight, 1)), strconv.Itoa(max(want.Weight, 1))
	default:
		return nil
	}
	return &Error{http.StatusConflict, CodeNotPermitted, fmt.Sprintf(
		"targets[%d].%s: target %s is declared in the config of target group %q, which owns its %s (%s; this call asks for %s): change it in the config and reload, or register it with the config's values",
		i, field, want.Key(), group, field, have, asked)}
}

func errQuota(format string, args ...any) *Error {
	return &Error{http.StatusBadRequest, CodeQuotaExceeded, fmt.Sprintf(format, args...)}
}

// DeregisterTargets starts draining a batch of targets. Targets that are not
// registered are ignored, as in AWS; targets declared by the config can't be
// deregistered through the API. It returns once the change is stored, and
// a call that can't be stored changes nothing.
func (r *Registry) DeregisterTargets(name string, targets []TargetConfig) error {
	if r.Group(name) == nil {
		return errNotFound(name)
	}
	if len(targets) == 0 {
		return fieldErr("targets", "at least one target is required")
	}
	defer r.names.lock(name)()
	g := r.Group(name)
	if g == nil {
		return errNotFound(name)
	}
	if err := r.restoring.writable(name); err != nil {
		return err
	}
	g.lock()
	b := r.basis(g)
	plan, err := g.deregisterBatch(targets, *b.allowed)
	var rec groupRecord
	if err == nil && len(plan.keys) > 0 {
		rec = g.record().with(nil, plan.drop)
	}
	own := g.version.Load()
	g.unlock()
	if err != nil {
		return err
	}
	if len(plan.keys) == 0 {
		return nil // none of them is registered: nothing to store
	}
	v, err := r.save(rec, own)
	if err != nil {
		return err
	}
	g.lock()
	stale := r.basis(g) != b
	if stale {
		if g.closed {
			g.unlock()
			return errNotFound(name)
		}
		if plan, err = g.deregisterBatch(targets, r.Allowed()); err != nil {
			g.unlock()
			r.rewrite(g)
			return err
		}
	}
	g.version.Store(v)
	g.deregister(plan.keys)
	g.publish()
	g.unlock()
	if stale {
		r.rewrite(g)
	}
	return nil
}

// deregistration is what a DeregisterTargets call changes.
type deregistration struct {
	keys []TargetKey             // the targets to drain
	drop map[TargetKey]time.Time // their tombstones in the record, until the delay ends
}

// deregisterBatch checks every target and works out which ones start
// draining; it changes nothing. Called with mu held.
func (g *Group) deregisterBatch(targets []TargetConfig, allowed []netip.Prefix) (deregistration, error) {
	keys := make([]TargetKey, len(targets))
	for i, t := range targets {
		if t.ID == "" {
			return deregistration{}, fieldErr(fmt.Sprintf("targets[%d].id", i), "required")
		}
		if t.Port < 0 || t.Port > 65535 {
			return deregistration{}, fieldErr(fmt.Sprintf("targets[%d].port", i), "%d is outside 1-65535", t.Port)
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
			return deregistration{}, &Error{http.StatusConflict, CodeNotPermitted, fmt.Sprintf("targets[%d]: %s is declared in the config of target group %q; remove it from the config instead", i, keys[i], g.name)}
		}
	}
	d := deregistration{drop: make(map[TargetKey]time.Time)}
	until := g.reg.clock.Now().Add(g.spec.Attributes.DeregistrationDelay)
	for _, k := range keys {
		t := g.targets[k]
		if t == nil || t.state == StateDraining {
			continue
		}
		if _, dup := d.drop[k]; dup {
			continue
		}
		// Live config targets were refused above: what drains is the API's.
		d.keys = append(d.keys, k)
		d.drop[k] = until
	}
	return d, nil
}
