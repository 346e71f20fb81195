package targetgroup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"

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

// CreateGroup creates a group owned by the API, as CreateTargetGroup does:
// the same client token with identical parameters returns the same group and
// changes nothing; the same token with other parameters is a conflict; an
// existing name with identical settings returns the existing group, with
// other settings it is DuplicateTargetGroupName. The bool reports whether
// the group was created by this call.
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

	r.mu.Lock()
	groups := *r.groups.Load()
	if req.ClientToken != "" {
		if owner, ok := r.tokens[req.ClientToken]; ok {
			g := groups[owner]
			same := g != nil && owner == req.Name && g.created != nil && reflect.DeepEqual(*g.created, spec.Config)
			r.mu.Unlock()
			if !same {
				return nil, false, &Error{http.StatusConflict, CodeConflict, fmt.Sprintf("client_token %q was used to create target group %q with other parameters", req.ClientToken, owner)}
			}
			return g, false, nil
		}
	}
	if g := groups[req.Name]; g != nil {
		r.mu.Unlock()
		if !reflect.DeepEqual(settings(g.Spec().Config), settings(spec.Config)) {
			return nil, false, &Error{http.StatusConflict, CodeDuplicateName, fmt.Sprintf("a target group named %q already exists with other settings", req.Name)}
		}
		return g, false, nil
	}
	if len(groups) >= limits.MaxGroups {
		r.mu.Unlock()
		return nil, false, errQuota("max_groups %d reached", limits.MaxGroups)
	}
	g := newGroup(r, req.Name, spec, SourceAPI)
	created := spec.Config
	g.created, g.clientToken = &created, req.ClientToken
	g.apiMu.Lock()
	defer g.apiMu.Unlock()
	g.lock()
	g.register(spec.Config.Targets, ownerAPI)
	g.publish()
	rec := g.record()
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
	return g, true, r.save(g, rec)
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
// result as a whole, keeping every target and its health.
func (r *Registry) modify(name, what string, change func(*GroupConfig) error) error {
	g := r.Group(name)
	if g == nil {
		return errNotFound(name)
	}
	g.apiMu.Lock()
	defer g.apiMu.Unlock()
	if g.Source() == SourceConfig {
		return errConfigOwned(name, what)
	}
	cfg := g.Spec().Config.Clone()
	cfg.Targets = nil
	if err := change(cfg); err != nil {
		return err
	}
	spec, err := NewSpec(cfg, r.Allowed())
	if err != nil {
		return err
	}
	g.lock()
	g.setSpec(spec)
	g.publish()
	rec := g.record()
	g.unlock()
	r.logger.Info("target group modified", zap.String("group", name), zap.String("changed", what))
	return r.save(g, rec)
}

// DeleteGroup deletes a group created through the API (DeleteTargetGroup).
// Its targets drain: requests in flight finish, no new request reaches them.
func (r *Registry) DeleteGroup(name string) error {
	g := r.Group(name)
	if g == nil {
		return errNotFound(name)
	}
	g.apiMu.Lock()
	defer g.apiMu.Unlock()
	if g.Source() == SourceConfig {
		return &Error{http.StatusConflict, CodeNotPermitted, fmt.Sprintf("target group %q is declared in the config: remove it from the config and reload", name)}
	}
	if r.InUse(name) {
		return &Error{http.StatusConflict, CodeResourceInUse, fmt.Sprintf("target group %q is used by a route of the running config; remove the route first", name)}
	}
	r.mu.Lock()
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
	keys := make([]TargetKey, 0, len(g.targets))
	for k := range g.targets {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	g.deregister(keys)
	g.publish()
	rec := g.record()
	g.unlock()
	rec.Deleted, rec.Config, rec.Created, rec.Targets = true, nil, nil, []TargetConfig{}
	r.logger.Info("target group deleted", zap.String("group", name))
	return r.save(g, rec)
}
