package targetgroup

import (
	"context"
	"errors"
	"io/fs"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// The sync loop: every sync interval the node reads its peers' heads and
// fetches the records that moved, merges each group whose records changed
// and puts the result in force. Health is each node's own: what a peer
// sees is read only for ?scope=cluster.

// runSync runs the sync loop until the registry is destructed; the
// interval is read at each turn, so a config load may change it.
func (r *Registry) runSync() {
	r.syncing.Add(1)
	go func() {
		defer r.syncing.Done()
		for {
			d := r.syncInterval()
			t := r.clock.AfterFunc(d, func() {
				select {
				case r.syncDue <- struct{}{}:
				default:
				}
			})
			select {
			case <-r.stop:
				t.Stop()
				return
			case <-r.syncDue:
			}
			r.runLogged("fleet sync", r.syncOnce)
		}
	}()
}

func (r *Registry) syncInterval() time.Duration {
	if d := r.syncEvery.Load(); d > 0 {
		return time.Duration(d)
	}
	return defaultSyncInterval
}

// syncOnce is one turn of the sync loop.
func (r *Registry) syncOnce() {
	st := r.storage()
	if st == nil || r.destructed() {
		return
	}
	f := r.fleet
	if !f.isSynced() {
		if err := r.fullSync(st); err != nil {
			r.syncFailed("reading the fleet's target groups from storage failed; the API refuses changes (503 StorageUnavailable) until it succeeds", err)
			return
		}
		r.logger.Info("read the fleet's target groups from storage; the API accepts changes", zap.String("node", f.node))
	}
	now := r.clock.Now()
	r.storeDirty(st)
	changed := map[string]bool{}
	if err := r.discover(st, changed); err != nil {
		r.syncFailed("looking for the fleet's nodes in storage failed", err)
	}
	if now.Sub(f.lastOwnCheck) >= ownCheckEvery {
		if err := r.checkOwn(st); err != nil {
			r.syncFailed("reading this node's own head from storage failed", err)
		} else {
			f.lastOwnCheck = now
		}
	}
	if err := r.pollPeers(st, changed); err != nil {
		r.syncFailed("reading the fleet's changes from storage failed; routing goes on with what was read", err)
	}
	r.applyGroups(changed)
	r.writeHealth(st, now)
	r.heartbeat(st, now)
	switch {
	case r.Keyring() == nil && now.Sub(f.lastKeys) >= time.Second:
		// The ring could not be loaded when the node started (storage
		// down): lb_cookie stickiness is off until it is.
		f.lastKeys = now
		if err := r.rotateKeys(); err != nil {
			r.syncFailed("loading the sticky cookie keys failed; lb_cookie stickiness is off until they load", err)
		} else {
			r.logger.Info("sticky cookie keys loaded; lb_cookie stickiness is on")
		}
	case now.Sub(f.lastKeys) >= keysEvery:
		f.lastKeys = now
		if err := r.reloadKeys(); err != nil {
			r.syncFailed("re-reading the sticky cookie keys failed", err)
		}
	}
}

// syncFailed logs a failure of the sync loop at most every 10 s: a storage
// that is down fails every turn.
func (r *Registry) syncFailed(msg string, err error) {
	f := r.fleet
	now := r.clock.Now()
	if now.Sub(f.lastSyncError) < 10*time.Second {
		return
	}
	f.lastSyncError = now
	r.logger.Error(msg, zap.String("node", f.node), zap.Error(err))
}

// firstSync reads the fleet's records as the registry starts, so that a
// restarted node has every registration back before it serves; if the
// storage does not answer, the sync loop tries again at each turn.
func (r *Registry) firstSync() {
	st := r.storage()
	if st == nil {
		r.fleet.mu.Lock()
		r.fleet.synced = true
		r.fleet.mu.Unlock()
		return
	}
	if err := r.fullSync(st); err != nil {
		r.logger.Error("reading the fleet's target groups from storage failed; the config's groups are in force, and the API refuses changes (503 StorageUnavailable) until storage answers",
			zap.String("node", r.fleet.node), zap.Error(err))
		r.fleet.lastSyncError = r.clock.Now()
	}
}

// fullSync reads every node's records, this node's own included, and puts
// the merge of every group in force.
func (r *Registry) fullSync(st certmagic.Storage) error {
	f := r.fleet
	nodes, err := listNodes(st)
	if err != nil {
		return err
	}
	peers := map[string]*peer{}
	var own *peer
	for _, n := range nodes {
		p, err := r.readNode(st, n)
		if err != nil {
			return err
		}
		switch {
		case p == nil:
		case n == f.node:
			own = p
		default:
			peers[n] = p
		}
	}
	var legacy []*contribution
	if len(nodes) == 0 {
		if legacy, err = r.readLegacy(st); err != nil {
			return err
		}
	}
	f.mu.Lock()
	if own != nil {
		f.own = maps.Clone(own.groups)
		f.seq = max(own.head.Seq, own.index.Seq)
		f.index = own.index.clone()
	}
	f.peerMu.Lock()
	f.peers = peers
	f.peerMu.Unlock()
	for _, p := range append([]*peer{own}, slices.Collect(maps.Values(peers))...) {
		if p != nil {
			for _, c := range p.groups {
				f.observe(c)
			}
		}
	}
	for _, c := range legacy {
		c.Node = f.node
		f.own[c.Group] = c
		f.dirty[c.Group] = true
	}
	// The head with the new epoch tells peers to read this node again.
	err = r.storeIndexHead(st, f.index.clone())
	if err == nil {
		f.synced = true
	}
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if len(legacy) > 0 {
		r.logger.Info("imported target groups stored by an earlier version", zap.Int("groups", len(legacy)))
		r.storeDirty(st)
	}
	names := f.groupNames()
	r.applyGroups(names)
	r.logger.Info("fleet records read", zap.String("node", f.node), zap.Int("peers", len(peers)), zap.Int("groups", len(names)))
	return nil
}

// observe moves the node's HLC past every value of c.
func (f *fleet) observe(c *contribution) {
	if c.Settings != nil {
		f.hlc.observe(c.Settings.HLC)
	}
	for _, e := range c.Targets {
		f.hlc.observe(e.HLC)
	}
}

// listNodes lists the nodes that have records in storage.
func listNodes(st certmagic.Storage) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storageCallTimeout)
	defer cancel()
	keys, err := st.List(ctx, fleetPrefix, false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, &storageError{"listing", err}
	}
	var nodes []string
	for _, k := range keys {
		n := path.Base(strings.TrimSuffix(k, "/"))
		if ValidateNodeID(n) == nil && !slices.Contains(nodes, n) {
			nodes = append(nodes, n)
		}
	}
	sort.Strings(nodes)
	return nodes, nil
}

// readNode reads a node's head, index and every record the index names.
// It returns nil when the node has no head.
func (r *Registry) readNode(st certmagic.Storage, node string) (*peer, error) {
	p := &peer{groups: map[string]*contribution{}, health: map[string]*healthRecord{}}
	if found, err := loadJSON(st, headKey(node), &p.head); err != nil || !found {
		return nil, err
	}
	if _, err := loadJSON(st, indexKey(node), &p.index); err != nil {
		return nil, err
	}
	p.index.Node = node
	for g := range p.index.Groups {
		c, err := r.readContribution(st, node, g)
		if err != nil {
			return nil, err
		}
		if c != nil {
			p.groups[g] = c
		}
	}
	for g := range p.index.Health {
		var h healthRecord
		if found, err := loadJSON(st, healthKey(node, g), &h); err != nil {
			return nil, err
		} else if found {
			p.health[g] = &h
		}
	}
	return p, nil
}

// readContribution reads one node's contribution to group; nil when it is
// gone or names something else (logged: reading it again would not help).
func (r *Registry) readContribution(st certmagic.Storage, node, group string) (*contribution, error) {
	var c contribution
	found, err := loadJSON(st, contributionKey(node, group), &c)
	var se *storageError
	if errors.As(err, &se) && se.op == "decoding" {
		r.logger.Error("skipping an unreadable target group record", zap.String("node", node), zap.String("group", group), zap.Error(err))
		return nil, nil
	}
	if err != nil || !found {
		return nil, err
	}
	if c.Group != group || c.Node != node {
		r.logger.Error("skipping a target group record stored under another name", zap.String("node", node), zap.String("group", group))
		return nil, nil
	}
	return &c, nil
}

// discover finds nodes that joined the fleet: one listing of the nodes'
// directory, at every turn, so that a node's changes are followed from its
// first one.
func (r *Registry) discover(st certmagic.Storage, changed map[string]bool) error {
	f := r.fleet
	nodes, err := listNodes(st)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		f.peerMu.RLock()
		_, known := f.peers[n]
		f.peerMu.RUnlock()
		if known || n == f.node {
			continue
		}
		p, err := r.readNode(st, n)
		if err != nil {
			return err
		}
		if p == nil {
			continue
		}
		r.setPeer(n, p, changed)
		r.logger.Info("a node joined the fleet", zap.String("node", f.node), zap.String("peer", n))
	}
	return nil
}

// checkOwn checks that this node's own records are still stored: a storage
// that lost its data (a Redis restarted without persistence) gets them
// written again.
func (r *Registry) checkOwn(st certmagic.Storage) error {
	f := r.fleet
	var head nodeHead
	found, err := loadJSON(st, headKey(f.node), &head)
	if err != nil {
		return err
	}
	f.mu.Lock()
	seq := f.seq
	f.mu.Unlock()
	if !found || head.Epoch != f.epoch || head.Seq < seq {
		if found && head.Epoch != f.epoch {
			r.logger.Error("another Caddy writes as this node: node_id must be unique among the nodes sharing a storage", zap.String("node", f.node))
		} else {
			r.logger.Warn("this node's records are missing from storage; writing them again", zap.String("node", f.node))
		}
		f.mu.Lock()
		for g := range f.own {
			f.dirty[g] = true
		}
		f.index.Health = map[string]int64{}
		f.mu.Unlock()
		for g := range f.healthWritten {
			delete(f.healthWritten, g)
		}
		r.storeDirty(st)
	}
	return nil
}

// setPeer installs what was read of a peer and marks the groups whose
// contribution it changes.
func (r *Registry) setPeer(n string, p *peer, changed map[string]bool) {
	f := r.fleet
	for _, c := range p.groups {
		f.observe(c)
	}
	f.peerMu.Lock()
	old := f.peers[n]
	f.peers[n] = p
	f.peerMu.Unlock()
	for g, c := range p.groups {
		if old == nil || old.groups[g] != c {
			changed[g] = true
		}
	}
	if old != nil {
		for g := range old.groups {
			if p.groups[g] == nil {
				changed[g] = true
			}
		}
	}
}

// pollPeers reads every peer's head and fetches what moved.
func (r *Registry) pollPeers(st certmagic.Storage, changed map[string]bool) error {
	f := r.fleet
	f.peerMu.RLock()
	names := make([]string, 0, len(f.peers))
	for n := range f.peers {
		names = append(names, n)
	}
	f.peerMu.RUnlock()
	sort.Strings(names)
	var errs []error
	for _, n := range names {
		if err := r.pollPeer(st, n, changed); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *Registry) pollPeer(st certmagic.Storage, n string, changed map[string]bool) error {
	f := r.fleet
	f.peerMu.RLock()
	old := f.peers[n]
	f.peerMu.RUnlock()
	var head nodeHead
	found, err := loadJSON(st, headKey(n), &head)
	if err != nil || !found {
		// A head that is gone (storage lost its data) changes nothing:
		// the peer writes it again.
		return err
	}
	if head.Epoch == old.head.Epoch && head.Seq == old.head.Seq {
		if !head.Heartbeat.Equal(old.head.Heartbeat) {
			p := *old
			p.head = head
			f.peerMu.Lock()
			f.peers[n] = &p
			f.peerMu.Unlock()
		}
		return nil
	}
	if head.Epoch != old.head.Epoch || head.Seq < old.head.Seq {
		// Restarted, or its storage lost data: read it all again, and keep
		// what it no longer has until it writes it again.
		p, err := r.readNode(st, n)
		if err != nil || p == nil {
			return err
		}
		for g, c := range old.groups {
			if p.groups[g] == nil {
				p.groups[g] = c
			}
		}
		r.setPeer(n, p, changed)
		return nil
	}
	var index nodeIndex
	if _, err := loadJSON(st, indexKey(n), &index); err != nil {
		return err
	}
	p := &peer{head: head, index: old.index.clone(), groups: maps.Clone(old.groups), health: maps.Clone(old.health)}
	p.index.Node, p.index.Seq = n, index.Seq
	var errs []error
	for g, seq := range index.Groups {
		if seq <= old.index.Groups[g] {
			continue
		}
		c, err := r.readContribution(st, n, g)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.index.Groups[g] = seq
		if c != nil {
			f.observe(c)
			p.groups[g] = c
			changed[g] = true
		}
	}
	for g, seq := range index.Health {
		if seq <= old.index.Health[g] {
			continue
		}
		var h healthRecord
		found, err := loadJSON(st, healthKey(n, g), &h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.index.Health[g] = seq
		if found {
			p.health[g] = &h
		}
	}
	if len(errs) > 0 {
		// Read again at the next turn what failed now.
		p.head.Seq = old.head.Seq
	}
	f.peerMu.Lock()
	f.peers[n] = p
	f.peerMu.Unlock()
	return errors.Join(errs...)
}

// storeDirty writes again the contributions whose last write failed
// halfway, so that storage holds what is in force.
func (r *Registry) storeDirty(st certmagic.Storage) {
	f := r.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	groups := make([]string, 0, len(f.dirty))
	for g := range f.dirty {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	for _, g := range groups {
		next := contribution{Node: f.node, Group: g, Targets: []targetEntry{}}
		if c := f.own[g]; c != nil {
			next = *c
		}
		if err := r.storeOwn(g, &next); err != nil {
			r.syncFailed("writing this node's target group records again failed", err)
			return
		}
	}
}

// heartbeat rewrites the node's head, when nothing else did for
// heartbeatEvery, so that peers see it alive.
func (r *Registry) heartbeat(st certmagic.Storage, now time.Time) {
	f := r.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Sub(f.lastHeartbeat) < heartbeatEvery {
		return
	}
	if err := r.storeIndexHead(st, f.index.clone()); err != nil {
		r.syncFailed("writing this node's heartbeat failed", err)
	}
}

// applyGroups puts the merged view of each named group in force.
func (r *Registry) applyGroups(names map[string]bool) {
	sorted := make([]string, 0, len(names))
	for g := range names {
		sorted = append(sorted, g)
	}
	sort.Strings(sorted)
	for _, name := range sorted {
		if r.destructed() {
			return
		}
		unlock := r.names.lock(name)
		r.applyView(name, r.fleet.view(name))
		unlock()
	}
}

// destructed reports whether Destruct has run (it closes stop under r.mu).
func (r *Registry) destructed() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}
