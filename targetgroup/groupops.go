package targetgroup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// CreateRequest is the body of CreateTargetGroup: the group JSON plus its
// name and an optional idempotency token.
type CreateRequest struct {
	Name        string `json:"name"`
	ClientToken string `json:"client_token,omitempty"`
	GroupConfig
}

func errConfigOwned(name, what string) *Error {
	return &Error{http.StatusConflict, CodeNotPermitted, fmt.Sprintf(
		"target group %q is declared in the config, which owns its %s: change it in the config (the target_groups global option, or /config/apps/target_groups/groups/%s) and reload", name, what, name)}
}

// settings is a group's configuration without its targets, for comparing
// two groups' settings.
func settings(c GroupConfig) GroupConfig {
	c.Targets = nil
	return c
}

// sameConfig compares two group configurations as the API and the record
// spell them: in JSON, where an empty list or map and an absent one are the
// same (a record read back has lost the difference).
func sameConfig(a, b GroupConfig) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// CreateGroup creates a group owned by the API, as CreateTargetGroup does:
// the same client token with identical parameters returns the same group and
// changes nothing; the same token with other parameters is a conflict; an
// existing name with identical settings returns the existing group, with
// other settings it is DuplicateTargetGroupName. The bool reports whether
// the group was created by this call. The group's record is stored before
// the group exists, so a creation that can't be stored creates nothing.
func (r *Registry) CreateGroup(req CreateRequest) (*Group, bool, error) {
	if err := ValidateName(req.Name); err != nil {
		return nil, false, err
	}
	if n := len(req.ClientToken); n > 64 || strings.ContainsFunc(req.ClientToken, func(c rune) bool { return c < '!' || c > '~' }) {
		return nil, false, fieldErr("client_token", "must be 1-64 printable ASCII characters without spaces")
	}
	spec, err := NewSpec(&req.GroupConfig, r.Allowed())
	if err != nil {
		return nil, false, err
	}
	limits := r.Limits()
	if len(spec.Config.Targets) > limits.MaxTargetsPerGroup {
		return nil, false, errQuota("%d targets exceed max_targets_per_group %d", len(spec.Config.Targets), limits.MaxTargetsPerGroup)
	}

	defer r.names.lock(req.Name)()
	if err := r.restoring.writable(req.Name); err != nil {
		return nil, false, err
	}
	r.mu.Lock()
	g, err := r.existingGroup(req, spec, limits)
	r.mu.Unlock()
	if g != nil || err != nil {
		return g, false, err
	}
	created := spec.Config
	cfg := settings(spec.Config)
	targets := slices.Clone(spec.Config.Targets)
	sortTargetConfigs(targets)
	if targets == nil {
		targets = []TargetConfig{}
	}
	rec := groupRecord{Name: req.Name, Source: SourceAPI, UpdatedAt: r.clock.Now().UTC(), Config: &cfg, Created: &created, ClientToken: req.ClientToken, Targets: targets}
	v, err := r.save(rec, 0)
	if err != nil {
		return nil, false, err
	}

	r.mu.Lock()
	if g, err := r.existingGroup(req, spec, limits); g != nil || err != nil {
		// A config load declared the name, or another creation took the
		// token or the last group, while the record was being written: the
		// group is not created, and storage must say so too.
		r.mu.Unlock()
		r.resync(req.Name, v)
		return g, false, err
	}
	groups := *r.groups.Load()
	g = newGroup(r, req.Name, spec, SourceAPI)
	g.created, g.clientToken = &created, req.ClientToken
	g.version.Store(v)
	g.lock()
	g.register(spec.Config.Targets, ownerAPI)
	g.publish()
	g.unlock()
	next := make(map[string]*Group, len(groups)+1)
	for k, v := range groups {
		next[k] = v
	}
	next[req.Name] = g
	r.groups.Store(&next)
	if req.ClientToken != "" {
		r.tokens[req.ClientToken] = req.Name
	}
	r.mu.Unlock()
	r.logger.Info("target group created", zap.String("group", req.Name), zap.String("id", g.id))
	return g, true, nil
}

// existingGroup answers a creation that creates nothing: the group an
// idempotent repeat or identical settings designate, or why the creation
// is refused. Both are nil when the group may be created. Called with r.mu
// held.
func (r *Registry) existingGroup(req CreateRequest, spec *Spec, limits Limits) (*Group, error) {
	groups := *r.groups.Load()
	if req.ClientToken != "" {
		if owner, ok := r.tokens[req.ClientToken]; ok {
			g := groups[owner]
			if g == nil || owner != req.Name || g.created == nil || !sameConfig(*g.created, spec.Config) {
				return nil, &Error{http.StatusConflict, CodeConflict, fmt.Sprintf("client_token %q was used to create target group %q with other parameters", req.ClientToken, owner)}
			}
			return g, nil
		}
	}
	if g := groups[req.Name]; g != nil {
		if !sameConfig(settings(g.Spec().Config), settings(spec.Config)) {
			return nil, &Error{http.StatusConflict, CodeDuplicateName, fmt.Sprintf("a target group named %q already exists with other settings", req.Name)}
		}
		return g, nil
	}
	if len(groups) >= limits.MaxGroups {
		return nil, errQuota("max_groups %d reached", limits.MaxGroups)
	}
	return nil, nil
}

// resync puts storage back in line with memory after a change whose record
// was written but which a config load or a concurrent creation overtook:
// the record of the group that holds the name now, or else a deleted
// record. Called with the name's lock held; a failure is logged.
func (r *Registry) resync(name string, written int64) {
	if g := r.Group(name); g != nil {
		r.rewrite(g)
		return
	}
	rec := groupRecord{Name: name, Source: SourceAPI, Deleted: true, UpdatedAt: r.clock.Now().UTC(), Targets: []TargetConfig{}}
	_, _ = r.save(rec, written)
}

// ModifyHealthCheck changes the named fields of a group's health check
// (ModifyTargetGroup); the other fields keep their values.
func (r *Registry) ModifyHealthCheck(name string, body map[string]json.RawMessage) error {
	for k := range body {
		if k != "health_check" {
			return fieldErr(k, "cannot be modified; ModifyTargetGroup changes health_check only (attributes: PATCH /target-groups/%s/attributes)", name)
		}
	}
	patch, ok := body["health_check"]
	if !ok {
		return fieldErr("health_check", "required")
	}
	return r.modify(name, "health check settings", func(c *GroupConfig) error {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(patch, &fields); err != nil {
			return fieldErr("health_check", "must be a JSON object: %v", err)
		}
		cur, _ := json.Marshal(c.HealthCheck)
		var merged map[string]json.RawMessage
		_ = json.Unmarshal(cur, &merged)
		for k, v := range fields {
			merged[k] = v
		}
		raw, _ := json.Marshal(merged)
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		var hc HealthCheckConfig
		if err := dec.Decode(&hc); err != nil {
			return fieldErr("health_check", "%v", err)
		}
		c.HealthCheck = &hc
		return nil
	})
}

// ModifyAttributes sets the given attributes (ModifyTargetGroupAttributes);
// the others keep their values.
func (r *Registry) ModifyAttributes(name string, attrs map[string]string) error {
	if len(attrs) == 0 {
		return fieldErr("attributes", "at least one attribute is required")
	}
	return r.modify(name, "attributes", func(c *GroupConfig) error {
		for k, v := range attrs {
			c.Attributes[k] = v
		}
		return nil
	})
}

// modify applies a change to an API group's settings after validating the
// result as a whole, keeping every target and its health. The new settings
// are stored first and take effect once stored.
func (r *Registry) modify(name, what string, change func(*GroupConfig) error) error {
	if r.Group(name) == nil {
		return errNotFound(name)
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
	spec, err := g.modified(what, change)
	var rec groupRecord
	if err == nil {
		rec = g.record()
		cfg := settings(spec.Config)
		rec.Config = &cfg
	}
	own := g.version.Load()
	g.unlock()
	if err != nil {
		return err
	}
	v, err := r.save(rec, own)
	if err != nil {
		return err
	}
	g.lock()
	stale := r.basis(g) != b
	if stale {
		// A config load came in between: it may have taken the group over.
		if spec, err = g.modified(what, change); err != nil {
			g.unlock()
			r.rewrite(g)
			return err
		}
	}
	g.version.Store(v)
	g.setSpec(spec)
	g.publish()
	g.unlock()
	if stale {
		r.rewrite(g)
	}
	r.logger.Info("target group modified", zap.String("group", name), zap.String("changed", what))
	return nil
}

// modified validates a change of the group's settings and returns the
// spec it makes; it changes nothing. Called with mu held.
func (g *Group) modified(what string, change func(*GroupConfig) error) (*Spec, error) {
	if g.source == SourceConfig {
		return nil, errConfigOwned(g.name, what)
	}
	cfg := g.spec.Config.Clone()
	cfg.Targets = nil
	if err := change(cfg); err != nil {
		return nil, err
	}
	return NewSpec(cfg, g.reg.Allowed())
}

// DeleteGroup deletes a group created through the API (DeleteTargetGroup).
// Its targets drain: requests in flight finish, no new request reaches them.
// The deletion is stored first, so one that can't be stored deletes nothing.
func (r *Registry) DeleteGroup(name string) error {
	if r.Group(name) == nil {
		return errNotFound(name)
	}
	defer r.names.lock(name)()
	g := r.Group(name)
	if g == nil {
		return errNotFound(name)
	}
	if err := r.restoring.writable(name); err != nil {
		return err
	}
	if err := r.deletable(g); err != nil {
		return err
	}
	g.lock()
	until := r.clock.Now().Add(g.spec.Attributes.DeregistrationDelay)
	drop := make(map[TargetKey]time.Time)
	var keys []TargetKey
	for _, t := range g.sortedTargets() {
		if t.state != StateDraining {
			keys = append(keys, t.Key())
			drop[t.Key()] = until
		}
	}
	rec := g.record().with(nil, drop)
	own := g.version.Load()
	g.unlock()
	// The tombstones stay, so that no older copy of the group can bring
	// its targets back.
	rec.Deleted, rec.Config, rec.Created, rec.ClientToken, rec.Targets = true, nil, nil, "", []TargetConfig{}
	v, err := r.save(rec, own)
	if err != nil {
		return err
	}

	r.mu.Lock()
	// A config load may have come in between: checked again, with the
	// group's removal, under the registry's lock.
	err = r.deletableLocked(g)
	if err == nil && r.Group(name) != g {
		err = errNotFound(name)
	}
	if err != nil {
		r.mu.Unlock()
		r.resync(name, v)
		return err
	}
	next := make(map[string]*Group, len(*r.groups.Load()))
	for k, v := range *r.groups.Load() {
		if k != name {
			next[k] = v
		}
	}
	r.groups.Store(&next)
	if g.clientToken != "" {
		delete(r.tokens, g.clientToken)
	}
	r.mu.Unlock()

	g.lock()
	g.deregister(keys)
	g.publish()
	g.unlock()
	r.logger.Info("target group deleted", zap.String("group", name))
	return nil
}

// deletable refuses to delete a config group or one a route uses.
func (r *Registry) deletable(g *Group) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deletableLocked(g)
}

// deletableLocked is deletable with r.mu held.
func (r *Registry) deletableLocked(g *Group) error {
	if g.Source() == SourceConfig {
		return &Error{http.StatusConflict, CodeNotPermitted, fmt.Sprintf("target group %q is declared in the config: remove it from the config and reload", g.name)}
	}
	if r.applied != nil && r.applied.refs[g.name] > 0 {
		return &Error{http.StatusConflict, CodeResourceInUse, fmt.Sprintf("target group %q is used by a route of the running config; remove the route first", g.name)}
	}
	return nil
}
