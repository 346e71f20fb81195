package targetgroup

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// storagePrefix is where records live in Caddy's storage: one record per
// group, so that nodes sharing a storage never rewrite each other's groups.
const storagePrefix = "target_groups/groups/"

func recordKey(name string) string { return storagePrefix + name + ".json" }

// groupRecord is what survives a restart: the settings of a group created
// through the API, and the targets registered through the API (into any
// group). Config groups and config targets come back from the config.
type groupRecord struct {
	// Version increases with every write; a node that reads a newer version
	// than its own knows another node wrote in between.
	Version   int64     `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	Name      string    `json:"name"`
	Source    string    `json:"source"`
	Deleted   bool      `json:"deleted,omitempty"`
	// API groups only: the effective settings and the creation parameters.
	Config      *GroupConfig `json:"config,omitempty"`
	Created     *GroupConfig `json:"created,omitempty"`
	ClientToken string       `json:"client_token,omitempty"`
	// Targets registered through the API.
	Targets []TargetConfig `json:"targets"`
	// Deregistrations still within their delay, kept so that a node holding
	// an older copy cannot bring a deregistered target back.
	Tombstones []tombstone `json:"tombstones,omitempty"`
}

type tombstone struct {
	ID    string    `json:"id"`
	Port  int       `json:"port,omitempty"`
	Until time.Time `json:"until"`
}

// record captures what must be persisted of g. Called with g.mu held.
func (g *Group) record() groupRecord {
	now := g.reg.clock.Now()
	rec := groupRecord{Name: g.name, Source: g.source, UpdatedAt: now.UTC(), Targets: []TargetConfig{}}
	if g.source == SourceAPI {
		cfg := g.spec.Config
		cfg.Targets = nil
		rec.Config, rec.Created, rec.ClientToken = &cfg, g.created, g.clientToken
	}
	for _, t := range g.sortedTargets() {
		switch {
		case t.owner != ownerAPI:
		case t.state == StateDraining:
			rec.Tombstones = append(rec.Tombstones, tombstone{ID: t.cfg.ID, Port: t.cfg.Port, Until: t.drainUntil.UTC()})
		default:
			rec.Targets = append(rec.Targets, t.cfg)
		}
	}
	for k, until := range g.tombstones {
		if until.After(now) && g.targets[k] == nil {
			rec.Tombstones = append(rec.Tombstones, tombstone{ID: k.ID, Port: k.Port, Until: until.UTC()})
		}
	}
	sortTombstones(rec.Tombstones)
	return rec
}

// errStorageUnavailable refuses a change whose record could not be written.
// The change is not in force either: what the API acknowledges is exactly
// what a restart brings back.
func errStorageUnavailable(name string, err error) *Error {
	return &Error{http.StatusServiceUnavailable, CodeStorageUnavailable, fmt.Sprintf(
		"target group %q was not changed: the change could not be written to storage (%v); retry once the storage is reachable", name, err)}
}

// Storage timeouts. A write waits longer than a read: it may have to wait
// for the storage lock of a writer that crashed (file system locks go stale
// after 10 s).
const (
	saveTimeout    = 30 * time.Second
	restoreTimeout = 10 * time.Second // of each listing and each record
)

// save writes rec as the record of group rec.Name and returns the version
// it wrote: a read-modify-write under the storage's lock, so that
// concurrent writers (other nodes) serialise. own is the version the caller
// last wrote or read. The file system storage writes atomically (temporary
// file and rename). Callers hold the name's lock (r.names), so that a
// group's records are written in the order of its changes.
func (r *Registry) save(rec groupRecord, own int64) (int64, error) {
	st := r.storage()
	if st == nil {
		return own, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	key := recordKey(rec.Name)
	if err := st.Lock(ctx, key); err != nil {
		return 0, r.storageFailed(rec.Name, "locking", err)
	}
	defer r.unlockRecord(st, key, rec.Name)
	// Only the stored version matters here.
	var prev struct {
		Version int64 `json:"version"`
	}
	if raw, err := st.Load(ctx, key); err == nil {
		if json.Unmarshal(raw, &prev) != nil {
			r.logger.Warn("replacing an unreadable target group record", zap.String("group", rec.Name))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, r.storageFailed(rec.Name, "reading", err)
	}
	rec.Version = max(prev.Version, own) + 1
	raw, err := json.Marshal(rec)
	if err != nil {
		return 0, r.storageFailed(rec.Name, "encoding", err)
	}
	if err := st.Store(ctx, key, raw); err != nil {
		return 0, r.storageFailed(rec.Name, "writing", err)
	}
	return rec.Version, nil
}

// unlockRecord releases a record's storage lock, within a bound of its
// own: a storage that stopped answering must not hold the group's name
// lock (and every later change of the group) for ever.
func (r *Registry) unlockRecord(st certmagic.Storage, key, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	if err := st.Unlock(ctx, key); err != nil {
		r.logger.Error("unlocking target group record", zap.String("group", name), zap.Error(err))
	}
}

func (r *Registry) storageFailed(name, what string, err error) error {
	r.logger.Error("target group storage failed", zap.String("group", name), zap.String("operation", what), zap.Error(err))
	return errStorageUnavailable(name, fmt.Errorf("%s: %v", what, err))
}

// rewrite stores g's record as memory has it. It follows a change that a
// config load overtook while its record was being written (the stored
// record then says what the change would have made): storage follows
// memory again. Called with the name's lock held; a failure is logged.
func (r *Registry) rewrite(g *Group) {
	g.lock()
	rec, own := g.record(), g.version.Load()
	g.unlock()
	v, err := r.save(rec, own)
	if err != nil {
		r.logger.Error("the stored record of the target group may differ from what is in force until its next change", zap.String("group", g.name), zap.Error(err))
		return
	}
	g.version.Store(v)
}

// with returns rec as a change leaves it: put registered (their tombstones
// gone), drop deregistered, as tombstones until the given times. put holds
// one entry per target. rec's lists are sorted (record sorts them), so the
// change is merged in rather than the whole record sorted again, and
// without hashing every target: a large group registers in small batches.
func (rec groupRecord) with(put []TargetConfig, drop map[TargetKey]time.Time) groupRecord {
	added := slices.Clone(put)
	slices.SortFunc(added, compareTargetConfigs)
	gone := make([]tombstone, 0, len(drop))
	for k, until := range drop {
		gone = append(gone, tombstone{ID: k.ID, Port: k.Port, Until: until.UTC()})
	}
	sortTombstones(gone)

	targets := make([]TargetConfig, 0, len(rec.Targets)+len(added))
	i, j := 0, 0 // into added and gone
	for _, t := range rec.Targets {
		for i < len(added) && compareKeys(added[i].ID, added[i].Port, t.ID, t.Port) < 0 {
			targets, i = append(targets, added[i]), i+1
		}
		if i < len(added) && compareKeys(added[i].ID, added[i].Port, t.ID, t.Port) == 0 {
			continue // registered again: added[i] takes its place
		}
		for j < len(gone) && compareKeys(gone[j].ID, gone[j].Port, t.ID, t.Port) < 0 {
			j++
		}
		if j < len(gone) && compareKeys(gone[j].ID, gone[j].Port, t.ID, t.Port) == 0 {
			continue // deregistered
		}
		targets = append(targets, t)
	}
	rec.Targets = append(targets, added[i:]...)

	// Tombstones are few: the old ones go when their target is registered
	// again or deregistered anew.
	touched := make(map[TargetKey]bool, len(put)+len(drop))
	for _, t := range put {
		touched[t.Key()] = true
	}
	for k := range drop {
		touched[k] = true
	}
	var ts []tombstone
	for _, x := range rec.Tombstones {
		if !touched[TargetKey{x.ID, x.Port}] {
			ts = append(ts, x)
		}
	}
	rec.Tombstones = mergeSorted(ts, gone, compareTombstones)
	return rec
}

func compareKeys(aID string, aPort int, bID string, bPort int) int {
	if c := strings.Compare(aID, bID); c != 0 {
		return c
	}
	return cmp.Compare(aPort, bPort)
}

// mergeSorted merges two sorted lists into a new sorted one.
func mergeSorted[T any](a, b []T, compare func(T, T) int) []T {
	if len(b) == 0 {
		return a
	}
	out := make([]T, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if compare(a[0], b[0]) <= 0 {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}

// compareTargetConfigs orders targets as a group does, by (id, port).
func compareTargetConfigs(a, b TargetConfig) int { return compareKeys(a.ID, a.Port, b.ID, b.Port) }

func sortTargetConfigs(ts []TargetConfig) { slices.SortFunc(ts, compareTargetConfigs) }

func compareTombstones(a, b tombstone) int { return compareKeys(a.ID, a.Port, b.ID, b.Port) }

func sortTombstones(ts []tombstone) { slices.SortFunc(ts, compareTombstones) }

// changeBasis is what validating an API change of a group depends on. A
// config load may replace any of it while the change's record is being
// written (the API holds the name's lock, not the registry's); the change
// is then validated again before it takes effect.
type changeBasis struct {
	spec    *Spec
	source  string
	closed  bool
	allowed *[]netip.Prefix
	limits  *Limits
}

// basis captures g's change basis. Called with g.mu held.
func (r *Registry) basis(g *Group) changeBasis {
	return changeBasis{spec: g.spec, source: g.source, closed: g.closed, allowed: r.allowed.Load(), limits: r.limits.Load()}
}

// nameLocks serialises the API's changes of one group name together with
// the writes of their records, so that records are written in the order
// of the changes: a delete and a create of one name can't leave the
// delete's record last. Lock order: a name, then Registry.mu, then a
// group's mu.
type nameLocks struct {
	mu sync.Mutex
	m  map[string]*nameLock
}

type nameLock struct {
	mu sync.Mutex
	// callers holding or waiting for mu; the entry is dropped at 0, so
	// that names the API tried once cost nothing afterwards.
	holders int
}

// lock takes name's lock and returns its unlock.
func (l *nameLocks) lock(name string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*nameLock)
	}
	e := l.m[name]
	if e == nil {
		e = &nameLock{}
		l.m[name] = e
	}
	e.holders++
	l.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		if e.holders--; e.holders == 0 {
			delete(l.m, name)
		}
		l.mu.Unlock()
	}
}

// holders reports how many callers hold or wait for name's lock.
func (l *nameLocks) holders(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[name]; e != nil {
		return e.holders
	}
	return 0
}

// Restore retries: the first one a second after a failure, then at twice
// the previous interval, up to restoreRetryMax.
const (
	restoreRetryMin = time.Second
	restoreRetryMax = 30 * time.Second
)

// deletedRecordTTL is how long the record of a deleted group is kept. The
// record outranks every older copy of the group (its version is higher),
// so it stays until no node can still hold one: far longer than nodes take
// to see a change, and than any tombstone in it lasts (at most the
// deregistration delay, 3600 s).
const deletedRecordTTL = 24 * time.Hour

// restoreState tracks the records that restore has not read yet. Until a
// group's record has been read, the API must not write that group: the
// write would replace the stored record, and whatever restore had not
// brought back would be lost for good.
type restoreState struct {
	mu sync.Mutex
	// unlisted: listing the records has not succeeded yet, so any group
	// may have one.
	unlisted bool
	// unread are the names whose listed record has not been read yet.
	unread map[string]bool
	// delay is the wait before the next retry.
	delay time.Duration
	// timeout bounds each storage call of restore; 0 means restoreTimeout.
	timeout time.Duration
}

// writable refuses an API change of the named group (or a creation under
// that name) while its record may exist unread.
func (s *restoreState) writable(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.unlisted:
		return &Error{http.StatusServiceUnavailable, CodeStorageUnavailable, fmt.Sprintf(
			"target group %q was not changed: the target groups stored in storage could not be listed when Caddy started, and a change now could overwrite one of them; listing is retried in the background, retry once the storage is reachable", name)}
	case s.unread[name]:
		return &Error{http.StatusServiceUnavailable, CodeStorageUnavailable, fmt.Sprintf(
			"target group %q was not changed: its stored record could not be read when Caddy started, and a change now would overwrite it; reading is retried in the background, retry once the storage is reachable", name)}
	}
	return nil
}

func (s *restoreState) callTimeout() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timeout > 0 {
		return s.timeout
	}
	return restoreTimeout
}

func (s *restoreState) setUnread(name string, unread bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !unread {
		delete(s.unread, name)
		return
	}
	if s.unread == nil {
		s.unread = make(map[string]bool)
	}
	s.unread[name] = true
}

// pending lists the names still to read, sorted; listed is false while
// the listing itself has not succeeded.
func (s *restoreState) pending() (names []string, listed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.unread {
		names = append(names, name)
	}
	sort.Strings(names)
	return names, !s.unlisted
}

// restore loads every record at the first start of the registry: groups
// created through the API come back with their settings, and targets
// registered through the API come back into their groups (through initial
// health checks: health is never persisted). Called with r.mu held, after
// the config's groups are in place, before the API can reach the registry.
// What it can't read (the storage is unreachable, a record fails to load)
// is retried in the background until it is read; until then the API
// refuses to write what might overwrite it.
func (r *Registry) restore(groups map[string]*Group) {
	st := r.storage()
	if st == nil {
		return
	}
	s := &r.restoring
	keys, err := r.listRecords(st)
	if err != nil {
		r.logger.Error("listing stored target groups failed; retrying in the background, and until it succeeds the API refuses changes (503 StorageUnavailable)", zap.Error(err))
		s.mu.Lock()
		s.unlisted = true
		s.mu.Unlock()
		r.retryRestoreLater()
		return
	}
	failed := false
	for i, key := range keys {
		name := recordName(key)
		rec, ok, err := r.readRecord(st, key)
		if err != nil {
			failed = true
			s.setUnread(name, true)
			if errors.Is(err, context.DeadlineExceeded) {
				// The storage hangs: leave the rest to the background
				// rather than hold the start one timeout per record.
				for _, k := range keys[i+1:] {
					s.setUnread(recordName(k), true)
				}
				break
			}
			continue
		}
		if ok {
			if g := r.restoreRecord(groups, rec); g != nil {
				groups[rec.Name] = g
			}
		}
	}
	if failed {
		r.retryRestoreLater()
	}
}

// retryRestoreLater schedules the next attempt at what restore has not read.
func (r *Registry) retryRestoreLater() {
	s := &r.restoring
	s.mu.Lock()
	d := max(s.delay, restoreRetryMin)
	s.delay = min(2*d, restoreRetryMax)
	s.mu.Unlock()
	r.logger.Warn("stored target groups not all read; retrying", zap.Duration("in", d))
	r.clock.AfterFunc(d, r.retryRestore)
}

// retryRestore reads what restore has not read yet: the listing if it
// failed, then each unread record, under its name's lock so that no API
// change of the group slips in between reading the record and marking it
// read.
func (r *Registry) retryRestore() {
	if r.destructed() {
		return
	}
	st := r.storage()
	if st == nil {
		return
	}
	s := &r.restoring
	if _, listed := s.pending(); !listed {
		keys, err := r.listRecords(st)
		if err != nil {
			r.logger.Error("listing stored target groups failed again", zap.Error(err))
			r.retryRestoreLater()
			return
		}
		s.mu.Lock()
		for _, key := range keys {
			if s.unread == nil {
				s.unread = make(map[string]bool)
			}
			s.unread[recordName(key)] = true
		}
		s.unlisted = false
		s.mu.Unlock()
	}
	names, _ := s.pending()
	for _, name := range names {
		if err := r.restoreNamed(st, name); err != nil {
			r.retryRestoreLater()
			return
		}
	}
	s.mu.Lock()
	s.delay = 0
	s.mu.Unlock()
	r.logger.Info("every stored target group is read; the API accepts changes again")
}

// restoreNamed reads and restores one record after the start.
func (r *Registry) restoreNamed(st certmagic.Storage, name string) error {
	defer r.names.lock(name)()
	rec, ok, err := r.readRecord(st, recordKey(name))
	if err != nil {
		return err
	}
	if ok {
		r.mu.Lock()
		if r.destructed() {
			r.mu.Unlock()
			return nil
		}
		groups := *r.groups.Load()
		if g := r.restoreRecord(groups, rec); g != nil {
			next := make(map[string]*Group, len(groups)+1)
			for k, v := range groups {
				next[k] = v
			}
			next[rec.Name] = g
			r.groups.Store(&next)
		}
		r.mu.Unlock()
	}
	r.restoring.setUnread(name, false)
	return nil
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

func recordName(key string) string { return strings.TrimSuffix(path.Base(key), ".json") }

// listRecords lists the keys of the stored records, sorted.
func (r *Registry) listRecords(st certmagic.Storage) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.restoring.callTimeout())
	defer cancel()
	keys, err := st.List(ctx, strings.TrimSuffix(storagePrefix, "/"), false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	keys = slices.DeleteFunc(keys, func(k string) bool { return !strings.HasSuffix(k, ".json") })
	sort.Strings(keys)
	return keys, nil
}

// readRecord loads one record, within its own timeout. ok is false when
// there is nothing to restore: the record is gone, belongs to a deleted
// group, or can't be decoded (logged: reading it again would not help, and
// the API may replace it). An error is a storage failure, worth retrying.
func (r *Registry) readRecord(st certmagic.Storage, key string) (rec groupRecord, ok bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.restoring.callTimeout())
	defer cancel()
	raw, err := st.Load(ctx, key)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return rec, false, nil
	case err != nil:
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (after %s)", context.DeadlineExceeded, r.restoring.callTimeout())
		}
		r.logger.Error("reading a stored target group failed; retrying in the background, and until it succeeds the API refuses changes to the group (503 StorageUnavailable)",
			zap.String("key", key), zap.Error(err))
		return rec, false, err
	}
	err = json.Unmarshal(raw, &rec)
	if err == nil && rec.Name != recordName(key) {
		err = fmt.Errorf("record names group %q", rec.Name)
	}
	if err != nil {
		r.logger.Error("skipping unreadable target group record", zap.String("key", key), zap.Error(err))
		return rec, false, nil
	}
	if rec.Deleted {
		r.forget(st, key, rec)
		return rec, false, nil
	}
	if rec.Source == SourceAPI && rec.Config == nil {
		r.logger.Error("skipping stored target group without settings", zap.String("key", key))
		return rec, false, nil
	}
	return rec, true, nil
}

// forget removes the record of a deleted group once nothing needs it (see
// deletedRecordTTL). It reads the record again under the storage lock and
// removes it only if it is still that deleted record, so that a group
// created since under the name keeps its record. Failures are logged and
// leave the record for the next start.
func (r *Registry) forget(st certmagic.Storage, key string, rec groupRecord) {
	now := r.clock.Now()
	if now.Before(rec.UpdatedAt.Add(deletedRecordTTL)) {
		return
	}
	for _, ts := range rec.Tombstones {
		if ts.Until.After(now) {
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.restoring.callTimeout())
	defer cancel()
	if err := st.Lock(ctx, key); err != nil {
		r.logger.Warn("keeping the record of a deleted target group: locking it failed", zap.String("group", rec.Name), zap.Error(err))
		return
	}
	defer r.unlockRecord(st, key, rec.Name)
	var cur groupRecord
	raw, err := st.Load(ctx, key)
	if err != nil || json.Unmarshal(raw, &cur) != nil || !cur.Deleted || cur.Version != rec.Version {
		return
	}
	if err := st.Delete(ctx, key); err != nil {
		r.logger.Warn("keeping the record of a deleted target group: removing it failed", zap.String("group", rec.Name), zap.Error(err))
		return
	}
	r.logger.Info("removed the stored record of a deleted target group", zap.String("group", rec.Name), zap.Time("deleted_at", rec.UpdatedAt))
}

// restoreRecord brings one record's group and targets back. A group the
// record describes that groups lacks (one created through the API) is
// returned for the caller to add; targets go into the group in place.
// Called with r.mu held.
func (r *Registry) restoreRecord(groups map[string]*Group, rec groupRecord) (created *Group) {
	g := groups[rec.Name]
	if g == nil && rec.Source == SourceAPI {
		spec, err := NewSpec(rec.Config, r.Allowed())
		if err == nil {
			err = ValidateName(rec.Name)
		}
		if err != nil {
			r.logger.Error("skipping stored target group that no longer validates", zap.String("group", rec.Name), zap.Error(err))
			return nil
		}
		g = newGroup(r, rec.Name, spec, SourceAPI)
		g.created, g.clientToken = rec.Created, rec.ClientToken
		if rec.ClientToken != "" {
			r.tokens[rec.ClientToken] = rec.Name
		}
		created = g
	}
	if g == nil {
		return nil // a config group the config no longer declares
	}
	allowed, limit := r.Allowed(), r.Limits().MaxTargetsPerGroup
	g.lock()
	defer g.unlock()
	g.version.Store(max(g.version.Load(), rec.Version))
	var add []TargetConfig
	var over []string
	seen := make(map[TargetKey]bool, len(rec.Targets))
	for _, t := range rec.Targets {
		n, err := g.spec.NormalizeTarget(t, allowed)
		if err != nil {
			// Kept as stored: the group's re-check below makes it unused
			// (Target.InvalidState) until a config fits it again, and its
			// record keeps it meanwhile.
			n = t
		}
		if g.targets[n.Key()] != nil || seen[n.Key()] {
			continue
		}
		seen[n.Key()] = true
		if len(g.targets)+len(add) >= limit {
			over = append(over, n.Key().String())
			continue
		}
		add = append(add, n)
	}
	if len(over) > 0 {
		r.logger.Error("stored targets beyond max_targets_per_group were not restored",
			zap.String("group", rec.Name), zap.Int("max_targets_per_group", limit), zap.Strings("targets", over))
	}
	for _, ts := range rec.Tombstones {
		if ts.Until.After(r.clock.Now()) {
			g.tombstones[TargetKey{ts.ID, ts.Port}] = ts.Until
		}
	}
	g.register(add, ownerAPI)
	g.revalidate(allowed)
	g.publish()
	r.logger.Info("restored target group from storage", zap.String("group", rec.Name), zap.String("source", rec.Source), zap.Int("targets", len(add)))
	return created
}

// storage is the storage of the config in force.
func (r *Registry) storage() certmagic.Storage {
	if s := r.store.Load(); s != nil {
		return *s
	}
	return nil
}
