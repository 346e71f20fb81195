package targetgroup

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// Health is each node's own: every node checks every target, as each node
// of an AWS load balancer does, and routes on what it sees. What each node
// sees is shared only to be looked at (?scope=cluster), so that a deploy
// script can wait until a target is drained on every node: each node
// writes its targets' states to health/<group>.json when they change, and
// their in-flight counts at most every healthRefresh.

// healthRecord is the states one node sees for one group's targets.
type healthRecord struct {
	Node    string      `json:"node"`
	Group   string      `json:"group"`
	Updated time.Time   `json:"updated"`
	Targets []healthRow `json:"targets"`
}

type healthRow struct {
	ID       string `json:"id"`
	Port     int    `json:"port"`
	State    State  `json:"state"`
	Reason   string `json:"reason,omitempty"`
	InFlight int64  `json:"in_flight"`
}

// NodeTargetState is the state one node of the fleet sees for a target.
type NodeTargetState struct {
	Node     string `json:"node"`
	State    State  `json:"state"`
	Reason   string `json:"reason"`
	InFlight int64  `json:"in_flight"`
	// When the node last wrote what it sees (this node: now).
	Updated time.Time `json:"updated"`
}

// healthRefresh bounds how often a node rewrites a group's health record
// when only in-flight counts moved; a change of state, and of a draining
// target's in-flight count, is written at the next sync.
const healthRefresh = 5 * time.Second

// peerHealthTTL: a peer silent for longer is left out of the cluster view
// (it is stopped or gone; a deploy script must not wait for it).
const peerHealthTTL = 60 * time.Second

// healthDigest is what a health record says, in-flight counts of targets
// that are not draining left out: a change of it is written at once.
type healthDigest struct {
	gen      uint64 // the group's stateGen when it was written
	draining bool   // a target was draining: its in-flight count matters
	states   string
	all      string
	written  time.Time
}

func (g *Group) healthRows() []healthRow {
	g.lock()
	defer g.unlock()
	ts := g.sortedTargets()
	rows := make([]healthRow, 0, len(ts))
	for _, t := range ts {
		rows = append(rows, healthRow{ID: t.key.ID, Port: t.key.Port, State: t.state, Reason: t.reason, InFlight: t.inflight.Load()})
	}
	return rows
}

func digestOf(rows []healthRow) (states, all string) {
	var s, a strings.Builder
	for _, r := range rows {
		s.WriteString(r.ID + ":" + strconv.Itoa(r.Port) + "=" + string(r.State) + "/" + r.Reason)
		a.WriteString(r.ID + ":" + strconv.Itoa(r.Port) + "=" + strconv.FormatInt(r.InFlight, 10))
		if r.State == StateDraining {
			s.WriteString("#" + strconv.FormatInt(r.InFlight, 10))
		}
		s.WriteByte(';')
		a.WriteByte(';')
	}
	return s.String(), a.String()
}

// writeHealth writes the health records of groups whose states changed,
// then one index and head for all of them.
func (r *Registry) writeHealth(st certmagic.Storage, now time.Time) {
	f := r.fleet
	type pending struct {
		group string
		rec   healthRecord
		d     healthDigest
	}
	var todo []pending
	live := map[string]bool{}
	for _, g := range r.Groups() {
		live[g.name] = true
		gen := g.stateGen.Load()
		last, ok := f.healthWritten[g.name]
		if ok && last.gen == gen && !last.draining && now.Sub(last.written) < healthRefresh {
			continue // nothing to look at: the common case, without a lock
		}
		rows := g.healthRows()
		states, all := digestOf(rows)
		if ok && last.states == states && (last.all == all || now.Sub(last.written) < healthRefresh) {
			// Nothing to write yet; written is when it was last found
			// current.
			if last.gen = gen; last.all == all {
				last.written = now
			}
			f.healthWritten[g.name] = last
			continue
		}
		draining := false
		for _, row := range rows {
			draining = draining || row.State == StateDraining
		}
		todo = append(todo, pending{g.name, healthRecord{Node: f.node, Group: g.name, Updated: now.UTC(), Targets: rows}, healthDigest{gen, draining, states, all, now}})
	}
	for name := range f.healthWritten {
		if !live[name] {
			todo = append(todo, pending{name, healthRecord{Node: f.node, Group: name, Updated: now.UTC(), Targets: []healthRow{}}, healthDigest{}})
		}
	}
	if len(todo) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	index := f.index.clone()
	index.Seq = f.seq + 1
	var written []pending
	for _, p := range todo {
		if err := storeJSON(st, healthKey(f.node, p.group), p.rec); err != nil {
			r.syncFailed("writing this node's target health failed", err)
			break
		}
		index.Health[p.group] = index.Seq
		written = append(written, p)
	}
	if len(written) == 0 {
		return
	}
	if err := r.storeIndexHead(st, index); err != nil {
		r.syncFailed("writing this node's target health failed", err)
		return
	}
	for _, p := range written {
		if live[p.group] {
			f.healthWritten[p.group] = p.d
		} else {
			delete(f.healthWritten, p.group)
		}
	}
}

// ClusterStates returns, per target of the group (by key), the state
// every node of the fleet sees, this node first and then the peers by
// name. A peer that has no record of the target reports it unused
// (Target.NotRegistered): it is not registered there, or has left.
func (r *Registry) ClusterStates(g *Group, keys []TargetKey) map[TargetKey][]NodeTargetState {
	now := r.clock.Now()
	out := make(map[TargetKey][]NodeTargetState, len(keys))
	own := map[TargetKey]healthRow{}
	for _, row := range g.healthRows() {
		own[TargetKey{row.ID, row.Port}] = row
	}
	f := r.fleet
	type peerRows struct {
		node    string
		updated time.Time
		rows    map[TargetKey]healthRow
	}
	var peers []peerRows
	f.peerMu.RLock()
	for n, p := range f.peers {
		if now.Sub(p.head.Heartbeat) > peerHealthTTL {
			continue
		}
		pr := peerRows{node: n, rows: map[TargetKey]healthRow{}}
		if h := p.health[g.name]; h != nil {
			pr.updated = h.Updated
			for _, row := range h.Targets {
				pr.rows[TargetKey{row.ID, row.Port}] = row
			}
		}
		peers = append(peers, pr)
	}
	f.peerMu.RUnlock()
	sort.Slice(peers, func(i, j int) bool { return peers[i].node < peers[j].node })
	state := func(node string, updated time.Time, row healthRow, ok bool) NodeTargetState {
		if !ok {
			return NodeTargetState{Node: node, State: StateUnused, Reason: ReasonNotRegistered, Updated: updated}
		}
		return NodeTargetState{Node: node, State: row.State, Reason: row.Reason, InFlight: row.InFlight, Updated: updated}
	}
	for _, k := range keys {
		row, ok := own[k]
		states := []NodeTargetState{state(f.node, now.UTC(), row, ok)}
		for _, p := range peers {
			row, ok := p.rows[k]
			states = append(states, state(p.node, p.updated, row, ok))
		}
		out[k] = states
	}
	return out
}

// Node is this node's id in the fleet.
func (r *Registry) Node() string { return r.fleet.node }
