package targetgroup

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// A group's persistent state is spread over the nodes of a fleet: each node
// stores its own contribution to each group, the changes it made through
// its API, and only it writes that record. What is in force is the merge of
// every node's contribution (merge): per target, and for a group's
// settings, the change with the highest HLC wins. Merging is commutative
// and idempotent, so nodes that read the same records agree, whatever order
// they read them in, and no write needs a lock.

// contribution is one node's record of one group.
type contribution struct {
	Node  string `json:"node"`
	Group string `json:"group"`
	// Seq is the node's change sequence number when it wrote the record.
	Seq int64 `json:"seq"`
	// Settings of a group created through the API (nil: the node has not
	// created, modified or deleted the group).
	Settings *settingsEntry `json:"settings,omitempty"`
	// The node's registrations and deregistrations, sorted by target.
	Targets []targetEntry `json:"targets"`
}

// settingsEntry is a creation, modification or deletion of an API group.
type settingsEntry struct {
	HLC     HLC  `json:"hlc"`
	Deleted bool `json:"deleted,omitempty"`
	// ID is the group's id, random when it was created through an API.
	ID string `json:"id,omitempty"`
	// Floor is the newest deletion of the group its writer knew of:
	// registrations older than the group's last deletion died with it.
	Floor       HLC          `json:"floor,omitzero"`
	Config      *GroupConfig `json:"config,omitempty"`
	Created     *GroupConfig `json:"created,omitempty"`
	ClientToken string       `json:"client_token,omitempty"`
	// CreatedAt is when the group was created, kept by every later entry.
	CreatedAt time.Time `json:"created_at,omitzero"`
	// UpdatedAt is when the entry's change was made: the time the node
	// answered its caller, which the HLC stamped a moment later is not.
	// Absent from older records, whose HLC stands for it.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// floor is the newest deletion the entry stands for.
func (s *settingsEntry) floor() HLC {
	if s == nil {
		return HLC{}
	}
	if s.Deleted && s.HLC.Compare(s.Floor) > 0 {
		return s.HLC
	}
	return s.Floor
}

// Target operations.
const (
	opRegister   = "register"
	opDeregister = "deregister"
)

// targetEntry is a registration, or a deregistration draining until Until.
type targetEntry struct {
	TargetConfig
	Op    string    `json:"op"`
	HLC   HLC       `json:"hlc"`
	Until time.Time `json:"until,omitzero"`
}

// delta is what one API change writes into this node's contribution: new
// settings (nil: unchanged), targets registered, targets deregistered
// draining until the given times.
type delta struct {
	settings *settingsEntry
	put      []TargetConfig
	drop     map[TargetKey]time.Time
}

func (d delta) empty() bool { return d.settings == nil && len(d.put) == 0 && len(d.drop) == 0 }

// with returns c as the change d stamped h leaves it (c may be nil: the
// node's first change of the group). Entries of targets the change touches
// are replaced; those older than the group's floor, and deregistrations
// whose drain ended more than tombstoneTTL ago, are dropped. c is not
// modified.
func (c *contribution) with(node, group string, d delta, h HLC, floor HLC, now time.Time) *contribution {
	out := &contribution{Node: node, Group: group, Targets: []targetEntry{}}
	if c != nil {
		out.Settings = c.Settings
	}
	if d.settings != nil {
		s := *d.settings
		s.HLC = h
		if f := out.Settings.floor(); f.Compare(floor) > 0 {
			floor = f
		}
		s.Floor = floor
		out.Settings = &s
	}
	floor = maxHLC(floor, out.Settings.floor())
	touched := make(map[TargetKey]bool, len(d.put)+len(d.drop))
	for _, t := range d.put {
		touched[t.Key()] = true
		out.Targets = append(out.Targets, targetEntry{TargetConfig: t, Op: opRegister, HLC: h})
	}
	for k, until := range d.drop {
		if touched[k] {
			continue
		}
		touched[k] = true
		out.Targets = append(out.Targets, targetEntry{TargetConfig: TargetConfig{ID: k.ID, Port: k.Port}, Op: opDeregister, HLC: h, Until: until.UTC()})
	}
	if c != nil {
		for _, e := range c.Targets {
			if touched[e.Key()] || e.HLC.Compare(floor) <= 0 || e.expired(now) {
				continue
			}
			out.Targets = append(out.Targets, e)
		}
	}
	sortEntries(out.Targets)
	return out
}

// tombstoneTTL is how long a deregistration is kept after its drain ended:
// it must outlive every older registration of the target that a node may
// still hold, and nodes see each other's changes within a second, so a day
// is ample (a node paused for longer resyncs from storage as it resumes).
const tombstoneTTL = 24 * time.Hour

func (e targetEntry) expired(now time.Time) bool {
	return e.Op == opDeregister && now.Sub(e.Until) > tombstoneTTL
}

func sortEntries(es []targetEntry) {
	slices.SortFunc(es, func(a, b targetEntry) int { return compareKeys(a.ID, a.Port, b.ID, b.Port) })
}

func maxHLC(a, b HLC) HLC {
	if a.Compare(b) >= 0 {
		return a
	}
	return b
}

// groupView is a group as the merge of every node's contribution has it.
type groupView struct {
	// settings is the newest settings entry (nil: no node has any).
	settings *settingsEntry
	// floor is the newest deletion of the group: no entry at or below it
	// counts.
	floor HLC
	// targets holds, per target, its newest entry above the floor.
	targets map[TargetKey]targetEntry
}

// merge merges the contributions of every node to one group.
func merge(cs []*contribution) groupView {
	v := groupView{targets: map[TargetKey]targetEntry{}}
	for _, c := range cs {
		if c == nil {
			continue
		}
		if s := c.Settings; s != nil {
			if v.settings == nil || s.HLC.Compare(v.settings.HLC) > 0 {
				v.settings = s
			}
			v.floor = maxHLC(v.floor, s.floor())
		}
	}
	for _, c := range cs {
		if c == nil {
			continue
		}
		for _, e := range c.Targets {
			if e.HLC.Compare(v.floor) <= 0 {
				continue
			}
			if cur, ok := v.targets[e.Key()]; !ok || e.HLC.Compare(cur.HLC) > 0 {
				v.targets[e.Key()] = e
			}
		}
	}
	return v
}

// deleted reports whether the group's newest settings entry deletes it.
func (v groupView) deleted() bool { return v.settings != nil && v.settings.Deleted }

func compareKeys(aID string, aPort int, bID string, bPort int) int {
	if c := strings.Compare(aID, bID); c != 0 {
		return c
	}
	return cmp.Compare(aPort, bPort)
}
