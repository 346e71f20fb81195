package targetgroup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"strings"
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
	sort.Slice(rec.Tombstones, func(i, j int) bool {
		a, b := rec.Tombstones[i], rec.Tombstones[j]
		return a.ID < b.ID || a.ID == b.ID && a.Port < b.Port
	})
	return rec
}

// errStorage marks a change that took effect in memory but could not be
// saved: the API reports it rather than acknowledging a change a restart
// would lose.
func errStorage(name string, err error) *Error {
	return &Error{http.StatusInternalServerError, "StorageError", fmt.Sprintf("target group %q changed but could not be saved to storage: %v", name, err)}
}

// save writes rec as the group's record: a read-modify-write under the
// storage's lock, so that concurrent writers (other nodes) serialise.
// The file system storage writes atomically (temporary file and rename).
func (r *Registry) save(g *Group, rec groupRecord) error {
	st := r.storage()
	if st == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key := recordKey(g.name)
	if err := st.Lock(ctx, key); err != nil {
		return r.storageFailed(g.name, "locking", err)
	}
	defer func() {
		if err := st.Unlock(context.Background(), key); err != nil {
			r.logger.Error("unlocking target group record", zap.String("group", g.name), zap.Error(err))
		}
	}()
	// Only the stored version matters here.
	var prev struct {
		Version int64 `json:"version"`
	}
	if raw, err := st.Load(ctx, key); err == nil {
		if json.Unmarshal(raw, &prev) != nil {
			r.logger.Warn("replacing an unreadable target group record", zap.String("group", g.name))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return r.storageFailed(g.name, "reading", err)
	}
	rec.Version = max(prev.Version, g.version.Load()) + 1
	raw, err := json.Marshal(rec)
	if err != nil {
		return r.storageFailed(g.name, "encoding", err)
	}
	if err := st.Store(ctx, key, raw); err != nil {
		return r.storageFailed(g.name, "writing", err)
	}
	g.version.Store(rec.Version)
	return nil
}

func (r *Registry) storageFailed(name, what string, err error) error {
	r.logger.Error("target group storage failed", zap.String("group", name), zap.String("operation", what), zap.Error(err))
	return errStorage(name, fmt.Errorf("%s: %v", what, err))
}

// restore loads every record at the first start of the registry: groups
// created through the API come back with their settings, and targets
// registered through the API come back into their groups (through initial
// health checks: health is never persisted). Called with r.mu held, after
// the config's groups are in place.
func (r *Registry) restore(groups map[string]*Group) {
	st := r.storage()
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, err := st.List(ctx, strings.TrimSuffix(storagePrefix, "/"), false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.logger.Error("listing target group records", zap.Error(err))
		return
	}
	sort.Strings(keys)
	for _, key := range keys {
		if !strings.HasSuffix(key, ".json") {
			continue
		}
		raw, err := st.Load(ctx, key)
		var rec groupRecord
		if err == nil {
			err = json.Unmarshal(raw, &rec)
		}
		if err == nil && rec.Name != strings.TrimSuffix(path.Base(key), ".json") {
			err = fmt.Errorf("record names group %q", rec.Name)
		}
		if err != nil {
			r.logger.Error("skipping unreadable target group record", zap.String("key", key), zap.Error(err))
			continue
		}
		if rec.Deleted {
			continue
		}
		g := groups[rec.Name]
		if g == nil && rec.Source == SourceAPI && rec.Config != nil {
			spec, err := NewSpec(rec.Config, r.Allowed())
			if err == nil {
				err = ValidateName(rec.Name)
			}
			if err != nil {
				r.logger.Error("skipping stored target group that no longer validates", zap.String("group", rec.Name), zap.Error(err))
				continue
			}
			g = newGroup(r, rec.Name, spec, SourceAPI)
			g.created, g.clientToken = rec.Created, rec.ClientToken
			if rec.ClientToken != "" {
				r.tokens[rec.ClientToken] = rec.Name
			}
			groups[rec.Name] = g
		}
		if g == nil {
			continue // a config group the config no longer declares
		}
		g.lock()
		g.version.Store(rec.Version)
		var valid []TargetConfig
		for _, t := range rec.Targets {
			n, err := g.spec.NormalizeTarget(t, r.Allowed())
			if err != nil {
				r.logger.Error("skipping stored target that no longer validates", zap.String("group", rec.Name), zap.String("target", t.Key().String()), zap.Error(err))
				continue
			}
			if g.targets[n.Key()] == nil {
				valid = append(valid, n)
			}
		}
		for _, ts := range rec.Tombstones {
			if ts.Until.After(r.clock.Now()) {
				g.tombstones[TargetKey{ts.ID, ts.Port}] = ts.Until
			}
		}
		g.register(valid, ownerAPI)
		g.publish()
		g.unlock()
		r.logger.Info("restored target group from storage", zap.String("group", rec.Name), zap.String("source", rec.Source), zap.Int("targets", len(valid)))
	}
}

// storage is the storage of the config in force.
func (r *Registry) storage() certmagic.Storage {
	if s := r.store.Load(); s != nil {
		return *s
	}
	return nil
}
