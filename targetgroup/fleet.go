package targetgroup

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// A fleet is every Caddy node that shares one Caddy storage. Each node
// writes only keys of its own, under target_groups/fleet/nodes/<node>/:
//
//	head.json             {node, epoch, seq, heartbeat}: small, read by
//	                      every peer at every sync interval
//	index.json            the seq at which each of the node's group and
//	                      health records last changed: read when head's
//	                      seq moved
//	groups/<group>.json   the node's contribution to the group
//	                      (contribution.go)
//	health/<group>.json   the states the node sees for the group's
//	                      targets, for ?scope=cluster (cluster.go)
//
// Nodes poll their peers' heads (the storage interface has no watch),
// fetch what moved, and merge. No write takes a storage lock.
const fleetPrefix = "target_groups/fleet/nodes"

func nodeKey(node, name string) string { return fleetPrefix + "/" + node + "/" + name }
func headKey(node string) string       { return nodeKey(node, "head.json") }
func indexKey(node string) string      { return nodeKey(node, "index.json") }
func contributionKey(node, group string) string {
	return nodeKey(node, "groups/"+group+".json")
}
func healthKey(node, group string) string { return nodeKey(node, "health/"+group+".json") }

// nodeHead is what peers poll.
type nodeHead struct {
	Node string `json:"node"`
	// Epoch is new at every start of the node's process: a peer that sees
	// a new epoch reads all of the node's records again.
	Epoch     string    `json:"epoch"`
	Seq       int64     `json:"seq"`
	Heartbeat time.Time `json:"heartbeat"`
	Zone      string    `json:"zone,omitempty"`
}

// nodeIndex says when each of a node's records last changed.
type nodeIndex struct {
	Node   string           `json:"node"`
	Seq    int64            `json:"seq"`
	Groups map[string]int64 `json:"groups"`
	Health map[string]int64 `json:"health,omitempty"`
}

func (x nodeIndex) clone() nodeIndex {
	out := nodeIndex{Node: x.Node, Seq: x.Seq, Groups: make(map[string]int64, len(x.Groups)+1), Health: make(map[string]int64, len(x.Health)+1)}
	for k, v := range x.Groups {
		out.Groups[k] = v
	}
	for k, v := range x.Health {
		out.Health[k] = v
	}
	return out
}

// Sync defaults.
const (
	defaultSyncInterval = 250 * time.Millisecond
	// ownCheckEvery: how often the node checks that its own records are
	// still stored (a storage restarted without its data loses them; the
	// node then writes them again).
	ownCheckEvery = 5 * time.Second
	// heartbeatEvery: how often the node rewrites its head when nothing
	// changes, so that peers see it alive.
	heartbeatEvery = 10 * time.Second
	// keysEvery: how often the node re-reads the sticky cookie key ring
	// another node may have rotated; a new key seals only after
	// keyActivation, longer than this.
	keysEvery = 30 * time.Second
	// storageCallTimeout bounds each storage call of the sync loop and of
	// an API write.
	storageCallTimeout = 5 * time.Second
)

// fleet is this node's part of the fleet's state.
type fleet struct {
	node  string
	epoch string
	hlc   hlcClock

	// mu guards this node's records and is held across their writes, so
	// that the node's writes are stored in the order of their seq.
	mu    sync.Mutex
	seq   int64
	index nodeIndex
	own   map[string]*contribution
	// dirty are groups whose stored contribution may differ from own: a
	// write stored it and then failed to store the index or head. The
	// sync loop stores them again.
	dirty map[string]bool
	// synced: every record of the fleet was read once; until then the API
	// refuses writes, which could overwrite a record not read yet.
	synced bool

	// peerMu guards peers. The sync loop is their only writer; it never
	// holds peerMu across a storage call.
	peerMu sync.RWMutex
	peers  map[string]*peer

	// lastHeartbeat is when the head was last stored (guarded by mu).
	lastHeartbeat time.Time

	// The sync loop's own state (its goroutine only).
	lastOwnCheck, lastKeys time.Time
	healthWritten          map[string]healthDigest
	lastSyncError          time.Time
}

// peer is what this node knows of another node.
type peer struct {
	head   nodeHead
	index  nodeIndex
	groups map[string]*contribution
	health map[string]*healthRecord
}

func newFleet(node string, now func() time.Time) *fleet {
	f := &fleet{
		node:          node,
		epoch:         newEpoch(),
		own:           map[string]*contribution{},
		dirty:         map[string]bool{},
		peers:         map[string]*peer{},
		healthWritten: map[string]healthDigest{},
	}
	f.hlc = hlcClock{node: node, now: now}
	f.index = nodeIndex{Node: node, Groups: map[string]int64{}, Health: map[string]int64{}}
	return f
}

// setNode names this node, before the registry first syncs.
func (f *fleet) setNode(node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.node, f.index.Node = node, node
	f.hlc.mu.Lock()
	f.hlc.node = node
	f.hlc.mu.Unlock()
}

func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// contributions returns every node's contribution to group, own first.
func (f *fleet) contributions(group string) []*contribution {
	f.mu.Lock()
	cs := []*contribution{f.own[group]}
	f.mu.Unlock()
	f.peerMu.RLock()
	for _, p := range f.peers {
		cs = append(cs, p.groups[group])
	}
	f.peerMu.RUnlock()
	return cs
}

// view merges every node's contribution to group.
func (f *fleet) view(group string) groupView { return merge(f.contributions(group)) }

// groupNames lists every group some node has a contribution to.
func (f *fleet) groupNames() map[string]bool {
	names := map[string]bool{}
	f.mu.Lock()
	for g := range f.own {
		names[g] = true
	}
	f.mu.Unlock()
	f.peerMu.RLock()
	for _, p := range f.peers {
		for g := range p.groups {
			names[g] = true
		}
	}
	f.peerMu.RUnlock()
	return names
}

// isSynced reports whether every record of the fleet was read once.
func (f *fleet) isSynced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.synced
}

// writable refuses an API change of the named group while the fleet's
// records are not all read: the change could overwrite one of them.
// Without storage there is nothing to read.
func (r *Registry) writable(name string) error {
	if r.storage() == nil || r.fleet.isSynced() {
		return nil
	}
	return refuse(KindStorageUnavailable,
		"target group %q was not changed: the target groups in storage could not be read yet, and a change now could overwrite one of them; reading is retried in the background, retry once the storage is reachable", name)
}

// ValidateNodeID checks a node id: 1-128 letters, digits, '.', '_' or '-'
// (it names storage keys).
func ValidateNodeID(id string) error {
	if id == "" || len(id) > 128 || strings.Trim(id, ".") == "" || strings.ContainsFunc(id, func(c rune) bool { return !nodeIDChar(c) }) {
		return fieldErr("node_id", "%q must be 1-128 characters: letters, digits, '.', '_' or '-'", id)
	}
	return nil
}

func nodeIDChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// defaultNodeID derives a node id from the host name and Caddy's instance
// id, which is stored in Caddy's data directory and so outlives restarts.
func defaultNodeID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(c rune) rune {
		if nodeIDChar(c) {
			return c
		}
		return '-'
	}, host)
	if len(host) > 64 {
		host = host[:64]
	}
	id := ""
	if uuid, err := caddy.InstanceID(); err == nil {
		id = strings.ReplaceAll(uuid.String(), "-", "")[:12]
	}
	switch {
	case host != "" && id != "":
		return host + "-" + id
	case id != "":
		return id
	case host != "":
		return host
	}
	return "node-" + newEpoch()
}

func (f *fleet) String() string { return fmt.Sprintf("node %s (epoch %s)", f.node, f.epoch) }
