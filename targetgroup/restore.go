package targetgroup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

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
		return refuse(KindStorageUnavailable,
			"target group %q was not changed: the target groups stored in storage could not be listed when Caddy started, and a change now could overwrite one of them; listing is retried in the background, retry once the storage is reachable", name)
	case s.unread[name]:
		return refuse(KindStorageUnavailable,
			"target group %q was not changed: its stored record could not be read when Caddy started, and a change now would overwrite it; reading is retried in the background, retry once the storage is reachable", name)
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
			next := maps.Clone(groups)
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
	err := r.locked(st, key, r.restoring.callTimeout(), func(ctx context.Context) error {
		var cur groupRecord
		raw, err := st.Load(ctx, key)
		if err != nil || json.Unmarshal(raw, &cur) != nil || !cur.Deleted || cur.Version != rec.Version {
			return nil
		}
		if err := st.Delete(ctx, key); err != nil {
			return &storageError{"removing", err}
		}
		r.logger.Info("removed the stored record of a deleted target group", zap.String("group", rec.Name), zap.Time("deleted_at", rec.UpdatedAt))
		return nil
	})
	var se *storageError
	if errors.As(err, &se) {
		r.logger.Warn("keeping the record of a deleted target group: "+se.op+" it failed", zap.String("group", rec.Name), zap.Error(se.err))
	}
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
