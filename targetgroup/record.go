package targetgroup

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

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
