package targetgroup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// The operations that change target groups, one per ELBv2 operation. Each
// checks its call, then makes its change through change (change.go), so
// that a call that is refused or can't be stored changes nothing.

// CreateRequest is the body of CreateTargetGroup: the group JSON plus its
// name and an optional idempotency token.
type CreateRequest struct {
	Name        string `json:"name"`
	ClientToken string `json:"client_token,omitempty"`
	GroupConfig
	// NameRule checks the name by the rules of the API the request came
	// through; nil is ValidateName, the JSON API's and the config's rule.
	NameRule func(name string) error `json:"-"`
	// UniqueName refuses an existing name as a duplicate even when its
	// settings are identical, unless this request's client token created
	// it: VPC Lattice's rule, where ELBv2 (and the JSON API) answer the
	// existing group.
	UniqueName bool `json:"-"`
}

// CreateGroup creates a group owned by the API, as CreateTargetGroup does:
// the same client token with identical parameters returns the same group and
// changes nothing; the same token with other parameters is a conflict; an
// existing name with identical settings returns the existing group, with
// other settings it is DuplicateTargetGroupName. The bool reports whether
// the group was created by this call. The group's record is stored before
// the group exists, so a creation that can't be stored creates nothing.
func (r *Registry) CreateGroup(req CreateRequest) (*Group, bool, error) {
	rule := req.NameRule
	if rule == nil {
		rule = ValidateName
	}
	if err := rule(req.Name); err != nil {
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
	var g *Group
	created := false
	err = r.change(req.Name, func() (plan, error) {
		if err := r.writable(req.Name); err != nil {
			return plan{}, err
		}
		r.mu.Lock()
		existing, err := r.existingGroup(req, spec, limits)
		r.mu.Unlock()
		if existing != nil || err != nil {
			g = existing
			return plan{}, err
		}
		params := spec.Config
		cfg := settings(spec.Config)
		id := randomGroupID()
		at := r.clock.Now().UTC().Truncate(time.Millisecond)
		d := delta{settings: &settingsEntry{ID: id, Config: &cfg, Created: &params, ClientToken: req.ClientToken, CreatedAt: at, UpdatedAt: at}, put: slices.Clone(spec.Config.Targets)}
		return plan{delta: d, commit: func() error {
			r.mu.Lock()
			if existing, err := r.existingGroup(req, spec, limits); existing != nil || err != nil {
				// A config load declared the name, or another creation took
				// the token or the last group, while the record was being
				// written: the group is not created, and the stored
				// contribution is put back as it was.
				r.mu.Unlock()
				g = existing
				if err == nil {
					err = errOvertaken
				}
				return err
			}
			g = newGroupWithID(r, req.Name, id, spec, SourceAPI)
			g.created, g.clientToken = &params, req.ClientToken
			g.createdAt, g.updatedAt = at, at
			g.lock()
			g.register(spec.Config.Targets, ownerAPI)
			g.publish()
			g.unlock()
			next := maps.Clone(*r.groups.Load())
			next[req.Name] = g
			r.groups.Store(&next)
			if req.ClientToken != "" {
				r.tokens[req.ClientToken] = req.Name
			}
			r.mu.Unlock()
			created = true
			r.logger.Info("target group created", zap.String("group", req.Name), zap.String("id", g.id))
			r.emit(groupEvent("target_group_created", g))
			return nil
		}}, nil
	})
	if err != nil {
		return nil, false, err
	}
	return g, created, nil
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
				return nil, refuse(KindConflict, "client_token %q was used to create target group %q with other parameters", req.ClientToken, owner)
			}
			return g, nil
		}
	}
	if g := groups[req.Name]; g != nil {
		if req.UniqueName {
			return nil, refuse(KindDuplicateName, "a target group named %q already exists (%s); names are unique: choose another name, or retry with the client token that created it", req.Name, g.id)
		}
		// Tags are no setting: a repeated creation after the group was
		// tagged, or with other tags, is still the same group.
		if !sameConfig(untagged(g.Spec().Config), untagged(spec.Config)) {
			return nil, refuse(KindDuplicateName, "a target group named %q already exists with other settings", req.Name)
		}
		return g, nil
	}
	if len(groups) >= limits.MaxGroups {
		return nil, errQuota("max_groups %d reached", limits.MaxGroups)
	}
	return nil, nil
}

// settings is a group's configuration without its targets, for comparing
// two groups' settings.
func settings(c GroupConfig) GroupConfig {
	c.Targets = nil
	return c
}

// untagged is a group's settings without its targets and tags.
func untagged(c GroupConfig) GroupConfig {
	c.Targets, c.Tags = nil, nil
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
		maps.Copy(merged, fields)
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
		maps.Copy(c.Attributes, attrs)
		return nil
	})
}

// ModifyTags adds or overwrites the tags of set and removes the keys of
// remove (AddTags, RemoveTags, TagResource, UntagResource); removing a key
// the group does not have is no error, as in AWS.
func (r *Registry) ModifyTags(name string, set map[string]string, remove []string) error {
	if len(set) == 0 && len(remove) == 0 {
		return fieldErr("tags", "at least one tag to add or key to remove is required")
	}
	return r.modify(name, "tags", func(c *GroupConfig) error {
		if c.Tags == nil {
			c.Tags = map[string]string{}
		}
		for _, k := range remove {
			delete(c.Tags, k)
		}
		maps.Copy(c.Tags, set)
		return nil
	})
}

// modify applies a change to an API group's settings after validating the
// result as a whole, keeping every target and its health.
func (r *Registry) modify(name, what string, apply func(*GroupConfig) error) error {
	if r.Group(name) == nil {
		return errNotFound(name)
	}
	err := r.changeGroup(name, func(g *Group) (edit, error) {
		spec, err := g.modified(what, apply)
		if err != nil {
			return edit{}, err
		}
		cfg := settings(spec.Config)
		at := r.clock.Now().UTC().Truncate(time.Millisecond)
		d := delta{settings: &settingsEntry{ID: g.id, Config: &cfg, Created: g.created, ClientToken: g.clientToken, CreatedAt: g.createdAt, UpdatedAt: at}}
		return edit{delta: d, apply: func() {
			g.setSpec(spec)
			g.updatedAt = at
		}}, nil
	})
	if err != nil {
		return err
	}
	r.logger.Info("target group modified", zap.String("group", name), zap.String("changed", what))
	return nil
}

// modified validates a change of the group's settings and returns the
// spec it makes; it changes nothing. Called with mu held.
func (g *Group) modified(what string, apply func(*GroupConfig) error) (*Spec, error) {
	if g.source == SourceConfig {
		return nil, refuse(KindNotPermitted,
			"target group %q is declared in the config, which owns its %s: change it in the config (the target_groups global option, or /config/apps/target_groups/groups/%s) and reload", g.name, what, g.name)
	}
	cfg := g.spec.Config.Clone()
	cfg.Targets = nil
	if err := apply(cfg); err != nil {
		return nil, err
	}
	return NewSpec(cfg, g.reg.Allowed())
}

// DeleteGroup deletes a group created through the API (DeleteTargetGroup).
// Its targets drain: requests in flight finish, no new request reaches them.
func (r *Registry) DeleteGroup(name string) error {
	if r.Group(name) == nil {
		return errNotFound(name)
	}
	return r.change(name, func() (plan, error) {
		g, err := r.writableGroup(name)
		if err != nil {
			return plan{}, err
		}
		if err := r.deletable(g); err != nil {
			return plan{}, err
		}
		g.lock()
		var keys []TargetKey
		for _, t := range g.sortedTargets() {
			if t.state != StateDraining {
				keys = append(keys, t.Key())
			}
		}
		g.unlock()
		// The deletion is the group's floor: every registration older than
		// it, on any node, died with the group.
		d := delta{settings: &settingsEntry{Deleted: true}}
		return plan{delta: d, commit: func() error {
			r.mu.Lock()
			// A config load may have come in between: checked again, with
			// the group's removal, under the registry's lock.
			err := r.deletableLocked(g)
			if err == nil && r.Group(name) != g {
				err = errNotFound(name)
			}
			if err != nil {
				r.mu.Unlock()
				return err
			}
			next := maps.Clone(*r.groups.Load())
			delete(next, name)
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
			forgetGroupSeries(name)
			r.emit(groupEvent("target_group_deleted", g))
			return nil
		}}, nil
	})
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
		return refuse(KindNotPermitted, "target group %q is declared in the config: remove it from the config and reload", g.name)
	}
	if r.applied != nil && r.applied.refs[g.name] > 0 {
		return refuse(KindInUse, "target group %q is used by a route of the running config; remove the route first", g.name)
	}
	return nil
}

// RegisterTargets registers a batch of targets: all of them or, when one is
// invalid, none. Registering a registered target changes nothing (an API
// target may be given a new zone or weight; a config target's are the
// config's); registering a draining target brings it back through initial
// checks.
func (r *Registry) RegisterTargets(name string, targets []TargetConfig) ([]TargetConfig, error) {
	if r.Group(name) == nil {
		return nil, errNotFound(name)
	}
	if len(targets) == 0 {
		return nil, fieldErr("targets", "at least one target is required")
	}
	var norm []TargetConfig
	err := r.changeGroup(name, func(g *Group) (edit, error) {
		p, err := g.registerBatch(targets)
		if err != nil {
			return edit{}, err
		}
		norm = p.norm
		if len(p.record) == 0 {
			return edit{}, nil // config targets as the config has them: nothing to store
		}
		// Every registration is stored, those that change nothing here
		// too: this node may not have read a deregistration another node
		// made, and the later of the two must win.
		return edit{delta: delta{put: p.record}, apply: func() { g.register(p.put, ownerAPI) }}, nil
	})
	if err != nil {
		return nil, err
	}
	return norm, nil
}

// registration is what a RegisterTargets call changes.
type registration struct {
	norm []TargetConfig // the call's targets, normalised (port filled in)
	put  []TargetConfig // those to register or update, one per target
	// record are the registrations the call stores: one per target,
	// those registered as asked already included, the config's excluded.
	record []TargetConfig
}

// registerBatch validates every target against the group as it is and
// works out what registering them changes; it changes nothing. Called with
// mu held.
func (g *Group) registerBatch(targets []TargetConfig) (registration, error) {
	spec, allowed := g.spec, g.reg.Allowed()
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
	var put, record []TargetConfig
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
		case cur.owner == ownerConfig:
			continue // the config's
		case sameRegistration(cur.cfg, n):
			record = append(record, n)
			continue // nothing to change here
		}
		put = append(put, n)
		record = append(record, n)
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
	if limit, total := g.reg.Limits().MaxTargetsPerGroup, len(g.targets)+added; total > limit {
		return registration{}, errQuota("target group %q would hold %d targets, %d of them draining; max_targets_per_group is %d, and draining targets count until their deregistration delay ends",
			g.name, total, len(g.targets)-live, limit)
	}
	return registration{norm: norm, put: put, record: record}, nil
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
	return refuse(KindNotPermitted,
		"targets[%d].%s: target %s is declared in the config of target group %q, which owns its %s (%s; this call asks for %s): change it in the config and reload, or register it with the config's values",
		i, field, want.Key(), group, field, have, asked)
}

// DeregisterTargets starts draining a batch of targets. Targets that are not
// registered are ignored, as in AWS; targets declared by the config can't be
// deregistered through the API. It returns once the change is stored.
func (r *Registry) DeregisterTargets(name string, targets []TargetConfig) error {
	if r.Group(name) == nil {
		return errNotFound(name)
	}
	if len(targets) == 0 {
		return fieldErr("targets", "at least one target is required")
	}
	return r.changeGroup(name, func(g *Group) (edit, error) {
		d, err := g.deregisterBatch(targets)
		if err != nil || len(d.drop) == 0 {
			return edit{}, err // all of them drain already: nothing to store
		}
		return edit{delta: delta{drop: d.drop}, apply: func() {
			for _, k := range d.keys {
				g.deregisterUntil([]TargetKey{k}, d.drop[k])
			}
		}}, nil
	})
}

// deregistration is what a DeregisterTargets call changes.
type deregistration struct {
	keys []TargetKey             // the targets to drain
	drop map[TargetKey]time.Time // when each one's drain ends
}

// deregisterBatch checks every target and works out which ones start
// draining; it changes nothing. Called with mu held.
func (g *Group) deregisterBatch(targets []TargetConfig) (deregistration, error) {
	allowed := g.reg.Allowed()
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
			return deregistration{}, refuse(KindNotPermitted, "targets[%d]: %s is declared in the config of target group %q; remove it from the config instead", i, keys[i], g.name)
		}
	}
	d := deregistration{drop: make(map[TargetKey]time.Time)}
	until := g.reg.clock.Now().Add(g.spec.Attributes.DeregistrationDelay)
	for _, k := range keys {
		t := g.targets[k]
		if t != nil && t.state == StateDraining {
			continue
		}
		if _, dup := d.drop[k]; dup {
			continue
		}
		// A target this node does not hold is deregistered too: another
		// node may have registered it a moment ago, and the later of the
		// two changes must win. Live config targets were refused above:
		// what drains is the API's.
		d.drop[k] = until
		if t != nil {
			d.keys = append(d.keys, k)
		}
	}
	return d, nil
}
