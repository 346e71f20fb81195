package targetgroup

import (
	"maps"
	"slices"

	"go.uber.org/zap"
)

// applyView puts the fleet's merged view of a group in force on this node:
// the group created, modified or deleted through any node's API, and the
// targets registered through any node's API registered or draining. The
// health of targets that stay is untouched; new ones start initial.
// Changes this node's API made are in force already, and applying them
// again changes nothing. Called with the name's lock held.
func (r *Registry) applyView(name string, v groupView) {
	g := r.Group(name)
	if s := v.settings; s != nil {
		switch {
		case s.Deleted:
			if g != nil && g.Source() == SourceAPI {
				r.removeGroup(g)
				return
			}
		case g == nil:
			g = r.addGroup(name, s)
		case g.Source() == SourceAPI:
			r.updateSettings(g, s)
		}
	}
	if g == nil {
		return // a config group this node's config does not declare
	}
	g.lock()
	g.applyTargets(v)
	g.publish()
	g.unlock()
}

// addGroup creates a group another node's API created.
func (r *Registry) addGroup(name string, s *settingsEntry) *Group {
	if s.Config == nil {
		return nil
	}
	spec, err := NewSpec(s.Config, r.Allowed())
	if err == nil {
		err = validStoredName(name)
	}
	if err != nil {
		r.logger.Error("a target group created through another node does not validate here; not created", zap.String("group", name), zap.Error(err))
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.destructed() {
		return nil
	}
	groups := *r.groups.Load()
	if g := groups[name]; g != nil {
		return g
	}
	if limit := r.Limits().MaxGroups; len(groups) >= limit {
		r.logger.Error("a target group created through another node exceeds max_groups here; not created", zap.String("group", name), zap.Int("max_groups", limit))
		return nil
	}
	id := s.ID
	if !validGroupID(id) {
		id = groupID(name) // stored by an earlier version
	}
	g := newGroupWithID(r, name, id, spec, SourceAPI)
	g.created, g.clientToken = s.Created, s.ClientToken
	g.setTimes(s)
	if s.ClientToken != "" {
		r.tokens[s.ClientToken] = name
	}
	next := maps.Clone(groups)
	next[name] = g
	r.groups.Store(&next)
	r.logger.Info("target group created", zap.String("group", name), zap.String("id", g.id), zap.String("through", s.HLC.Node))
	r.emit(groupEvent("target_group_created", g))
	return g
}

// updateSettings gives an API group the settings another node's API set.
func (r *Registry) updateSettings(g *Group, s *settingsEntry) {
	if s.Config == nil {
		return
	}
	r.mu.Lock()
	if g.clientToken != s.ClientToken {
		if g.clientToken != "" && r.tokens[g.clientToken] == g.name {
			delete(r.tokens, g.clientToken)
		}
		if s.ClientToken != "" {
			r.tokens[s.ClientToken] = g.name
		}
	}
	r.mu.Unlock()
	g.lock()
	defer g.unlock()
	g.created, g.clientToken = s.Created, s.ClientToken
	if sameConfig(settings(g.spec.Config), settings(*s.Config)) {
		if !s.CreatedAt.IsZero() {
			g.createdAt = s.CreatedAt
		}
		return
	}
	spec, err := NewSpec(s.Config, r.Allowed())
	if err != nil {
		r.logger.Error("settings set through another node do not validate here; the group keeps its settings", zap.String("group", g.name), zap.Error(err))
		return
	}
	g.setSpec(spec)
	g.setTimes(s)
	g.publish()
	r.logger.Info("target group modified", zap.String("group", g.name), zap.String("through", s.HLC.Node))
}

// removeGroup deletes an API group another node's API deleted; its targets
// drain, as with a deletion through this node.
func (r *Registry) removeGroup(g *Group) {
	r.mu.Lock()
	if r.Group(g.name) != g {
		r.mu.Unlock()
		return
	}
	inUse := r.applied != nil && r.applied.refs[g.name] > 0
	next := maps.Clone(*r.groups.Load())
	delete(next, g.name)
	r.groups.Store(&next)
	if g.clientToken != "" && r.tokens[g.clientToken] == g.name {
		delete(r.tokens, g.clientToken)
	}
	r.mu.Unlock()
	g.lock()
	var keys []TargetKey
	for _, t := range g.sortedTargets() {
		if t.state != StateDraining {
			keys = append(keys, t.Key())
		}
	}
	g.deregister(keys)
	g.publish()
	g.unlock()
	if inUse {
		r.logger.Warn("target group deleted through another node while a route of this node uses it; the route answers 503", zap.String("group", g.name))
	} else {
		r.logger.Info("target group deleted", zap.String("group", g.name))
	}
	forgetGroupSeries(g.name)
	r.emit(groupEvent("target_group_deleted", g))
}

// applyTargets registers and deregisters the group's API targets as the
// view has them. Targets the config declares are the config's. Called with
// mu held; the caller publishes.
func (g *Group) applyTargets(v groupView) {
	now := g.reg.clock.Now()
	delay := g.spec.Attributes.DeregistrationDelay
	for _, t := range g.sortedTargets() {
		if t.owner != ownerAPI || t.state == StateDraining {
			continue
		}
		e, ok := v.targets[t.Key()]
		switch {
		case ok && e.Op == opRegister:
			continue
		case ok && !e.Until.IsZero():
			g.deregisterUntil([]TargetKey{t.Key()}, e.Until)
		default:
			// No node registers it any more (its registration was undone).
			g.deregisterUntil([]TargetKey{t.Key()}, now.Add(delay))
		}
	}
	keys := slices.SortedFunc(maps.Keys(v.targets), func(a, b TargetKey) int { return compareKeys(a.ID, a.Port, b.ID, b.Port) })
	allowed, limit := g.reg.Allowed(), g.reg.Limits().MaxTargetsPerGroup
	var put []TargetConfig
	var over []string
	for _, k := range keys {
		e := v.targets[k]
		if e.Op != opRegister {
			continue
		}
		t := g.targets[k]
		if t != nil && t.state != StateDraining && (t.owner == ownerConfig || sameRegistration(t.cfg, e.TargetConfig)) {
			continue
		}
		if t == nil && len(g.targets)+len(put) >= limit {
			over = append(over, k.String())
			continue
		}
		n, err := g.spec.NormalizeTarget(e.TargetConfig, allowed)
		if err != nil || n.Key() != k {
			// Kept as registered: revalidate makes it unused
			// (Target.InvalidState) until a config fits it.
			n = e.TargetConfig
		}
		put = append(put, n)
	}
	if len(over) > 0 {
		g.reg.logger.Error("targets registered through another node exceed max_targets_per_group here; not registered",
			zap.String("group", g.name), zap.Int("max_targets_per_group", limit), zap.Strings("targets", over))
	}
	if len(put) > 0 {
		g.register(put, ownerAPI)
		g.revalidate(allowed)
	}
}
