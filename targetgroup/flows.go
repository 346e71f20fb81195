package targetgroup

import (
	"container/heap"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// UDP flows cost Caddy a socket to the target, two goroutines and buffers
// for as long as they live, and a client makes a new one with every source
// port it sends from. So each group admits at most max_udp_flows_per_group
// of them, across every layer4 server that routes to it: a new flow beyond
// the cap closes the least recently active one. Its client starts a new
// flow if it sends again.
//
// The relays mark a flow active on every datagram, so that has to be
// cheap: Touch stores a timestamp in the flow, taking no lock. The table
// keeps its flows in a min-heap keyed by the timestamp each had when it was
// last placed there, which is never later than its real one. Evicting
// takes the top; if it was touched since it was placed, it goes back with
// its new timestamp and the next top is tried. A top whose key is its real
// timestamp is the least recently active flow: every other flow's real
// timestamp is at least its key, which is at least the top's. Each
// re-placement stands for at least one Touch, so the cost is O(log n) per
// admission and per flow touched since the last eviction, never per
// datagram.

// flowEpoch is the origin of the flows' timestamps: time.Since reads the
// monotonic clock, which wall-clock steps do not move.
var flowEpoch = time.Now()

func flowNow() int64 { return int64(time.Since(flowEpoch)) }

// Flow is one live UDP flow of a group, from AdmitFlow until Done.
type Flow struct {
	group  *Group
	closer io.Closer
	last   atomic.Int64  // flowNow of the latest datagram
	ended  chan struct{} // closed by Done

	// guarded by table.mu
	key   int64 // last when the flow was placed in the heap
	index int   // position in the heap; -1 once out of it
	done  bool
}

// evictionWait bounds how long an admission waits for the flows it closed
// to end: they only have to close their sockets and return.
const evictionWait = time.Second

// flowTable is a group's live UDP flows; its zero value is empty.
type flowTable struct {
	mu    sync.Mutex
	flows flowHeap
	// evicting is set by the first eviction and cleared once the live
	// flows fall below 90% of the cap, so that a group held at its cap
	// logs one line when it gets there and one when it leaves, not one per
	// flow that comes and goes.
	evicting bool
	evicted  int64 // flows evicted since evicting was set
}

// AdmitFlow counts a new UDP flow against the group's
// max_udp_flows_per_group until its Done. When the group is at the cap,
// the least recently active flows are closed through their Closer, outside
// any lock, and AdmitFlow returns once they are Done (or a second has
// passed): the flow they make room for is dialed only then, so that the
// group's sockets to targets, and its in_flight, stay within the cap. The
// cap is the registry's in force, so a config reload changes it for the
// next admission.
func (g *Group) AdmitFlow(c io.Closer) *Flow {
	limit := g.reg.Limits().MaxUDPFlowsPerGroup
	now := flowNow()
	f := &Flow{group: g, closer: c, key: now, ended: make(chan struct{})}
	f.last.Store(now)
	t := &g.flows
	t.mu.Lock()
	var evicted []*Flow
	for len(t.flows) >= limit {
		evicted = append(evicted, t.leastRecent())
	}
	heap.Push(&t.flows, f)
	live := len(t.flows)
	if len(evicted) > 0 {
		if !t.evicting {
			t.evicting, t.evicted = true, 0
			g.reg.logger.Warn("UDP flows at max_udp_flows_per_group: new flows close the least recently active ones",
				zap.String("group", g.name), zap.Int("max_udp_flows_per_group", limit), zap.Int("live_flows", live))
		}
		t.evicted += int64(len(evicted))
	}
	t.mu.Unlock()
	for _, e := range evicted {
		if ce := g.reg.logger.Check(zap.DebugLevel, "closing the least recently active UDP flow"); ce != nil {
			ce.Write(zap.String("group", g.name), zap.Duration("idle", time.Duration(now-e.last.Load())))
		}
		_ = e.closer.Close()
	}
	if len(evicted) > 0 {
		waitEnded(g, evicted)
	}
	return f
}

// waitEnded waits, at most evictionWait in all, until the flows are Done.
func waitEnded(g *Group, flows []*Flow) {
	timeout := time.NewTimer(evictionWait)
	defer timeout.Stop()
	for _, e := range flows {
		select {
		case <-e.ended:
		case <-timeout.C:
			if ce := g.reg.logger.Check(zap.DebugLevel, "a closed UDP flow has not ended; admitting the new one anyway"); ce != nil {
				ce.Write(zap.String("group", g.name), zap.Duration("waited", evictionWait))
			}
			return
		}
	}
}

// leastRecent takes the least recently active flow out of the heap (see
// the comment at the top). Called with mu held and the heap not empty.
func (t *flowTable) leastRecent() *Flow {
	// Flows touched while we look could send the top back forever; after
	// one pass over the heap the top is taken as it is, which is then at
	// most that pass behind.
	for range len(t.flows) {
		top := t.flows[0]
		last := top.last.Load()
		if last == top.key {
			break
		}
		top.key = last
		heap.Fix(&t.flows, 0)
	}
	f := heap.Pop(&t.flows).(*Flow)
	f.index = -1
	return f
}

// Touch marks the flow active: the relays call it on every datagram. It
// takes no lock.
func (f *Flow) Touch() { f.last.Store(flowNow()) }

// Done ends the flow: call it once its socket to the target is closed and
// its lease released. It is idempotent.
func (f *Flow) Done() {
	g := f.group
	t := &g.flows
	t.mu.Lock()
	defer t.mu.Unlock()
	if f.done {
		return
	}
	f.done = true
	close(f.ended)
	if f.index < 0 {
		return // evicted: out of the heap already
	}
	heap.Remove(&t.flows, f.index)
	f.index = -1
	live := len(t.flows)
	if t.evicting && live*10 < g.reg.Limits().MaxUDPFlowsPerGroup*9 {
		t.evicting = false
		g.reg.logger.Info("UDP flows below max_udp_flows_per_group again",
			zap.String("group", g.name), zap.Int("live_flows", live), zap.Int64("flows_closed", t.evicted))
	}
}

// UDPFlows is the number of live UDP flows the group counts against
// max_udp_flows_per_group.
func (g *Group) UDPFlows() int {
	t := &g.flows
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.flows)
}

// flowHeap is a min-heap of flows by key (container/heap).
type flowHeap []*Flow

func (h flowHeap) Len() int           { return len(h) }
func (h flowHeap) Less(i, j int) bool { return h[i].key < h[j].key }
func (h flowHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *flowHeap) Push(x any) {
	f := x.(*Flow)
	f.index = len(*h)
	*h = append(*h, f)
}

func (h *flowHeap) Pop() any {
	old := *h
	f := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return f
}
