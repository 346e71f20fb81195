package targetgroup

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

func hlc(wall int64, node string) HLC { return HLC{Wall: wall, Node: node} }

// The merge is the same whatever order the nodes' contributions are read
// in, and reading one twice changes nothing.
func TestMergeIsCommutativeAndIdempotent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Unix(1000, 0)
	for round := range 200 {
		var cs []*contribution
		for n := range 3 {
			node := fmt.Sprintf("n%d", n)
			var c *contribution
			for range 6 {
				d := delta{}
				k := TargetConfig{ID: "10.0.0.1", Port: 1 + rng.IntN(4)}
				switch rng.IntN(4) {
				case 0:
					d.drop = map[TargetKey]time.Time{k.Key(): now.Add(time.Minute)}
				case 1:
					d.settings = &settingsEntry{Deleted: rng.IntN(2) == 0, Config: &GroupConfig{Port: 80}}
				default:
					d.put = []TargetConfig{k}
				}
				c = c.with(node, "g", d, hlc(int64(rng.IntN(50)), node), HLC{}, now)
			}
			cs = append(cs, c)
		}
		want := fmt.Sprint(merge(cs))
		for range 5 {
			shuffled := append([]*contribution{}, cs...)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			shuffled = append(shuffled, shuffled[rng.IntN(len(shuffled))])
			if got := fmt.Sprint(merge(shuffled)); got != want {
				t.Fatalf("round %d: merge depends on order:\n%s\n%s", round, got, want)
			}
		}
	}
}

// The later of a registration and a deregistration wins, whichever node
// made which.
func TestMergeLaterChangeWins(t *testing.T) {
	now := time.Unix(1000, 0)
	k := TargetConfig{ID: "10.0.0.1", Port: 80}
	reg := (*contribution)(nil).with("a", "g", delta{put: []TargetConfig{k}}, hlc(5, "a"), HLC{}, now)
	dereg := (*contribution)(nil).with("b", "g", delta{drop: map[TargetKey]time.Time{k.Key(): now}}, hlc(7, "b"), HLC{}, now)
	if e := merge([]*contribution{reg, dereg}).targets[k.Key()]; e.Op != opDeregister {
		t.Fatalf("the later deregistration lost: %+v", e)
	}
	reg = reg.with("a", "g", delta{put: []TargetConfig{k}}, hlc(9, "a"), HLC{}, now)
	if e := merge([]*contribution{dereg, reg}).targets[k.Key()]; e.Op != opRegister {
		t.Fatalf("the later registration lost: %+v", e)
	}
}

// Registrations older than a group's deletion died with it, on whichever
// node they were made, and stay dead when the group is created again.
func TestMergeDeletionIsAFloor(t *testing.T) {
	now := time.Unix(1000, 0)
	a := (*contribution)(nil).with("a", "g", delta{put: []TargetConfig{{ID: "10.0.0.1", Port: 80}}}, hlc(5, "a"), HLC{}, now)
	b := (*contribution)(nil).with("b", "g", delta{settings: &settingsEntry{Deleted: true}}, hlc(6, "b"), HLC{}, now)
	v := merge([]*contribution{a, b})
	if !v.deleted() || len(v.targets) != 0 {
		t.Fatalf("after the deletion: deleted %v, targets %v", v.deleted(), v.targets)
	}
	// b creates the group again, knowing the deletion as its floor.
	b = b.with("b", "g", delta{settings: &settingsEntry{Config: &GroupConfig{Port: 81}}}, hlc(8, "b"), v.floor, now)
	v = merge([]*contribution{a, b})
	if v.deleted() || len(v.targets) != 0 || v.settings.Config.Port != 81 {
		t.Fatalf("after the new creation: deleted %v, targets %v", v.deleted(), v.targets)
	}
	// a's later writes drop what the floor voids.
	a = a.with("a", "g", delta{put: []TargetConfig{{ID: "10.0.0.2", Port: 80}}}, hlc(9, "a"), v.floor, now)
	if len(a.Targets) != 1 || a.Targets[0].ID != "10.0.0.2" {
		t.Fatalf("a keeps a registration the deletion voided: %+v", a.Targets)
	}
}

// The clock issues increasing values, moves past what it observes, and
// ignores values too far ahead.
func TestHLCClock(t *testing.T) {
	now := time.Unix(1000, 0)
	c := hlcClock{node: "a", now: func() time.Time { return now }}
	h1, h2 := c.next(), c.next()
	if h2.Compare(h1) <= 0 {
		t.Fatalf("%v then %v", h1, h2)
	}
	peer := HLC{Wall: now.Add(time.Second).UnixMilli(), Count: 3, Node: "b"}
	c.observe(peer)
	if h := c.next(); h.Compare(peer) <= 0 {
		t.Fatalf("after observing %v the clock issued %v", peer, h)
	}
	far := HLC{Wall: now.Add(time.Hour).UnixMilli(), Node: "b"}
	c.observe(far)
	if h := c.next(); h.Compare(far) >= 0 {
		t.Fatalf("a value an hour ahead dragged the clock to %v", h)
	}
}
