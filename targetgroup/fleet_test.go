package targetgroup

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
)

// Nodes of a fleet in one process: registries sharing one storage, each
// with its own node id, synced by calling syncOnce (what the sync loop runs
// every sync_interval) rather than by waiting for it.

type testFleet struct {
	t     *testing.T
	st    *flakyStorage
	clock *fakeClock
	nodes map[string]*Registry
}

func newTestFleet(t *testing.T, names ...string) *testFleet {
	f := &testFleet{t: t, st: newFlakyStorage(t), clock: newTestClock(), nodes: map[string]*Registry{}}
	for _, n := range names {
		f.start(n)
	}
	return f
}

// start starts (or restarts) a node with the web config group.
func (f *testFleet) start(name string) *Registry {
	f.t.Helper()
	if r := f.nodes[name]; r != nil {
		must(f.t, r.Destruct())
	}
	r := startNode(f.t, name, f.st, f.clock, webConfig())
	f.nodes[name] = r
	return r
}

// sync runs one sync turn on each named node (every node when none).
func (f *testFleet) sync(names ...string) {
	if len(names) == 0 {
		for n := range f.nodes {
			names = append(names, n)
		}
		slices.Sort(names)
	}
	for _, n := range names {
		f.nodes[n].syncOnce()
	}
}

// expect checks that every named node describes group as want.
func (f *testFleet) expect(group string, want string, names ...string) {
	f.t.Helper()
	for _, n := range names {
		if got := strings.Join(described(f.nodes[n], group), ","); got != want {
			f.t.Fatalf("node %s: %s holds %q, want %q", n, group, got, want)
		}
	}
}

// webOnly is the web group with its config target only (health checks
// are off: targets are unavailable).
const webOnly = "127.0.0.1:1 unavailable"

// A registration made through one node is in force on the others at their
// next sync, with its own health there (every node checks for itself).
func TestFleetRegistrationReachesEveryNode(t *testing.T) {
	f := newTestFleet(t, "a", "b", "c")
	mustRegister(t, f.nodes["a"], "web", local(2))
	f.sync("b", "c")
	for _, n := range []string{"a", "b", "c"} {
		if got := described(f.nodes[n], "web"); len(got) != 2 || got[1] != "127.0.0.1:2 unavailable" {
			t.Fatalf("node %s: web %v", n, got)
		}
	}
	must(t, f.nodes["b"].DeregisterTargets("web", local(2)))
	f.sync("a", "c")
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 draining", "a", "b", "c")
	// The drain ends when the deregistering node said, on every node.
	f.clock.Advance(300 * time.Second)
	f.expect("web", webOnly, "a", "b", "c")
}

// Nodes that change one group at once keep every change: each node writes
// only its own contribution, and the merge is per target.
func TestFleetConcurrentWritersAreAllKept(t *testing.T) {
	f := newTestFleet(t, "a", "b", "c")
	for i, n := range []string{"a", "b", "c"} {
		mustRegister(t, f.nodes[n], "web", local(10+i))
	}
	f.sync()
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:10 unavailable,127.0.0.1:11 unavailable,127.0.0.1:12 unavailable", "a", "b", "c")
}

// Between a registration and a deregistration of one target, the later
// one wins on every node, whichever each node read first.
func TestFleetLaterChangeWins(t *testing.T) {
	f := newTestFleet(t, "a", "b")
	mustRegister(t, f.nodes["a"], "web", local(2))
	f.sync("b")
	must(t, f.nodes["b"].DeregisterTargets("web", local(2)))
	f.clock.Advance(time.Millisecond)
	mustRegister(t, f.nodes["a"], "web", local(2)) // later: it wins
	f.sync()
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 unavailable", "a", "b")
	f.sync()
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 unavailable", "a", "b")

	f.clock.Advance(time.Millisecond)
	must(t, f.nodes["a"].DeregisterTargets("web", local(2)))
	f.sync()
	f.sync()
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 draining", "a", "b")

	// A deregistration through a node that has not read the registration
	// yet still wins over it.
	mustRegister(t, f.nodes["a"], "web", local(3))
	f.clock.Advance(time.Millisecond)
	must(t, f.nodes["b"].DeregisterTargets("web", local(3)))
	f.sync()
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 draining,127.0.0.1:3 draining", "a")
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 draining", "b")
}

// A node that missed a deregistration (paused) does not bring the target
// back: it writes only its own changes, and its own registration is older.
func TestFleetPausedNodeNeverResurrects(t *testing.T) {
	f := newTestFleet(t, "a", "b", "c")
	mustRegister(t, f.nodes["c"], "web", local(2))
	f.sync()
	// c is paused: it does not sync while a deregisters.
	must(t, f.nodes["a"].DeregisterTargets("web", local(2)))
	f.sync("b")
	// c resumes and writes before reading.
	mustRegister(t, f.nodes["c"], "web", local(3))
	f.sync("a", "b")
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 draining,127.0.0.1:3 unavailable", "a", "b")
	f.sync("c")
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 draining,127.0.0.1:3 unavailable", "c")
	f.clock.Advance(300 * time.Second)
	f.sync()
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:3 unavailable", "a", "b", "c")
}

// Groups created, modified and deleted through one node follow on every
// node; a group created again after a deletion starts empty there too.
func TestFleetGroupLifecycle(t *testing.T) {
	f := newTestFleet(t, "a", "b")
	mustCreate(t, f.nodes["a"], apiGroup("api", 80, TargetConfig{ID: "10.0.0.1"}))
	f.sync("b")
	if g := f.nodes["b"].Group("api"); g == nil || g.ID() != f.nodes["a"].Group("api").ID() || len(described(f.nodes["b"], "api")) != 1 {
		t.Fatalf("b does not hold the api group as a has it: %v", described(f.nodes["b"], "api"))
	}
	must(t, f.nodes["b"].ModifyAttributes("api", map[string]string{AttrDeregistrationDelay: "5"}))
	f.sync("a")
	if v := f.nodes["a"].Group("api").Spec().Attributes.DeregistrationDelay; v != 5*time.Second {
		t.Fatalf("a's api group has a deregistration delay of %s", v)
	}
	must(t, f.nodes["a"].DeleteGroup("api"))
	f.sync("b")
	if f.nodes["b"].Group("api") != nil {
		t.Fatal("the deleted group is still on b")
	}
	mustCreate(t, f.nodes["b"], apiGroup("api", 81))
	f.sync()
	for _, n := range []string{"a", "b"} {
		g := f.nodes[n].Group("api")
		if g == nil || g.Spec().Config.Port != 81 || len(described(f.nodes[n], "api")) != 0 {
			t.Fatalf("node %s: the new api group is %v with %v", n, g, described(f.nodes[n], "api"))
		}
	}
	// A restart reads the same.
	f.start("a")
	if g := f.nodes["a"].Group("api"); g == nil || g.Spec().Config.Port != 81 || len(described(f.nodes["a"], "api")) != 0 {
		t.Fatalf("after a restart a holds %v", described(f.nodes["a"], "api"))
	}
}

// A node restarted (kill -9: nothing written at the end) has every
// registration of the fleet back before it serves.
func TestFleetRestartedNodeHasEverything(t *testing.T) {
	f := newTestFleet(t, "a", "b")
	mustRegister(t, f.nodes["a"], "web", local(2))
	mustRegister(t, f.nodes["b"], "web", local(3))
	mustCreate(t, f.nodes["b"], apiGroup("api", 80, TargetConfig{ID: "10.0.0.1"}))
	r := f.start("a")
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 unavailable,127.0.0.1:3 unavailable", "a")
	if len(described(r, "api")) != 1 {
		t.Fatalf("api on the restarted node: %v", described(r, "api"))
	}
	// Its peers re-read it (a new epoch) and keep what they had.
	f.sync("b")
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 unavailable,127.0.0.1:3 unavailable", "b")
}

// Storage that stops answering: every node keeps what it has, a write is
// refused and changes nothing anywhere, and once storage is back writes
// work and nodes converge, without a restart.
func TestFleetStorageOutage(t *testing.T) {
	f := newTestFleet(t, "a", "b")
	mustRegister(t, f.nodes["a"], "web", local(2))
	f.sync()
	f.st.failing("Store", "Load", "List")
	f.sync()
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 unavailable", "a", "b")
	before := fingerprint(t, f.nodes["b"])
	_, err := f.nodes["b"].RegisterTargets("web", local(3))
	expectRefusal(t, "register during the outage", err, KindStorageUnavailable)
	if after := fingerprint(t, f.nodes["b"]); after != before {
		t.Fatal("a refused write changed the node")
	}
	f.st.heal()
	f.sync()
	mustRegister(t, f.nodes["b"], "web", local(3))
	f.sync("a")
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 unavailable,127.0.0.1:3 unavailable", "a", "b")
}

// A write stored in part (the contribution, not the head that announces
// it) is refused, and the sync loop writes storage back to what is in force.
func TestFleetHalfStoredWriteIsUndone(t *testing.T) {
	f := newTestFleet(t, "a", "b")
	f.st.setFail(func(_ context.Context, op, key string) error {
		if op == "Store" && key == indexKey("a") {
			return errStorageDown
		}
		return nil
	})
	_, err := f.nodes["a"].RegisterTargets("web", local(2))
	expectRefusal(t, "register whose index can't be stored", err, KindStorageUnavailable)
	if c, _ := f.st.contribution(t, "a", "web"); len(c.registered()) != 1 {
		t.Fatalf("the half-stored contribution: %v", c.Targets)
	}
	f.st.heal()
	f.sync()
	if c, _ := f.st.contribution(t, "a", "web"); len(c.registered()) != 0 {
		t.Fatalf("the refused registration is still stored: %v", c.Targets)
	}
	f.start("b")
	f.expect("web", webOnly, "a", "b")
}

// Storage that lost its data (a Redis restarted without persistence): each
// node writes its own records again, so a node that starts later reads
// everything.
func TestFleetStorageDataLoss(t *testing.T) {
	f := newTestFleet(t, "a", "b")
	mustRegister(t, f.nodes["a"], "web", local(2))
	mustRegister(t, f.nodes["b"], "web", local(3))
	must(t, f.nodes["a"].rotateKeys())
	must(t, f.nodes["b"].rotateKeys())
	cookie, err := f.nodes["a"].Keyring().Seal(selection.Sticky{Group: "web", ID: "127.0.0.1", Port: 2, Expires: f.clock.Now().Add(time.Hour)})
	must(t, err)
	f.sync()
	root := f.st.Storage.(*certmagic.FileStorage).Path
	must(t, os.RemoveAll(filepath.Join(root, "target_groups")))
	f.clock.Advance(keysEvery)
	f.sync()
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 unavailable,127.0.0.1:3 unavailable", "a", "b")
	c := f.start("c")
	f.expect("web", "127.0.0.1:1 unavailable,127.0.0.1:2 unavailable,127.0.0.1:3 unavailable", "c")
	must(t, c.rotateKeys())
	if _, err := c.Keyring().Open(cookie, "web", f.clock.Now()); err != nil {
		t.Fatalf("a cookie sealed before the storage lost its data does not open on a new node: %v", err)
	}
}

// ?scope=cluster: every node's own view of each target.
func TestFleetClusterStates(t *testing.T) {
	f := newTestFleet(t, "a", "b")
	mustRegister(t, f.nodes["a"], "web", local(2))
	f.sync()
	must(t, f.nodes["a"].DeregisterTargets("web", local(2)))
	f.sync("a") // a writes what it sees
	f.sync("b") // b reads a's write and its health, and writes its own
	f.sync("a")
	a := f.nodes["a"]
	states := a.ClusterStates(a.Group("web"), []TargetKey{{"127.0.0.1", 2}, {"127.0.0.1", 9}})
	got := func(k TargetKey) string {
		var out []string
		for _, s := range states[k] {
			out = append(out, s.Node+"="+string(s.State))
		}
		return strings.Join(out, ",")
	}
	if g := got(TargetKey{"127.0.0.1", 2}); g != "a=draining,b=draining" {
		t.Fatalf("127.0.0.1:2 across the fleet: %s", g)
	}
	if g := got(TargetKey{"127.0.0.1", 9}); g != "a=unused,b=unused" {
		t.Fatalf("an unregistered target across the fleet: %s", g)
	}
}

// A sticky cookie sealed by one node opens on every other, across a key
// rotation: a new key seals only once every node has had time to read it.
func TestFleetCookiesOpenOnEveryNode(t *testing.T) {
	f := newTestFleet(t, "a", "b")
	for _, r := range f.nodes {
		must(t, r.rotateKeys())
	}
	seal := func(r *Registry) string {
		v, err := r.Keyring().Seal(selection.Sticky{Group: "web", ID: "127.0.0.1", Port: 2, Expires: f.clock.Now().Add(time.Hour)})
		must(t, err)
		return v
	}
	opens := func(r *Registry, v string) bool {
		_, err := r.Keyring().Open(v, "web", f.clock.Now())
		return err == nil
	}
	if v := seal(f.nodes["a"]); !opens(f.nodes["b"], v) {
		t.Fatal("b does not open a's cookie")
	}
	f.clock.Advance(keyRotation)
	must(t, f.nodes["a"].rotateKeys()) // a adds a key; b has not read it yet
	if v := seal(f.nodes["a"]); !opens(f.nodes["b"], v) {
		t.Fatal("right after a rotated, b does not open a's cookie")
	}
	f.clock.Advance(keysEvery)
	f.sync()
	f.clock.Advance(keyActivation)
	f.sync()
	ka, kb := f.nodes["a"].Keyring().SealingKey(), f.nodes["b"].Keyring().SealingKey()
	if ka != kb || ka != 2 {
		t.Fatalf("after the activation delay a seals with key %d, b with %d; want both 2", ka, kb)
	}
	if v := seal(f.nodes["b"]); !opens(f.nodes["a"], v) {
		t.Fatal("a does not open b's cookie under the new key")
	}
}

// Records of the version before the fleet are imported as the node's own.
func TestLegacyRecordsAreImported(t *testing.T) {
	st, clock := newFlakyStorage(t), newTestClock()
	write := func(name string, v any) {
		raw, _ := json.Marshal(v)
		must(t, st.Storage.Store(context.Background(), legacyPrefix+"/"+name+".json", raw))
	}
	cfg := GroupConfig{Port: 80, HealthCheck: &HealthCheckConfig{Enabled: &noChecks}}
	write("api", map[string]any{"version": 3, "name": "api", "source": "api", "config": cfg, "targets": []TargetConfig{{ID: "10.0.0.1", Port: 80}}})
	write("web", map[string]any{"version": 1, "name": "web", "source": "config", "targets": local(2)})
	write("gone", map[string]any{"version": 2, "name": "gone", "source": "api", "deleted": true, "targets": []TargetConfig{}})
	r := startNode(t, "a", st, clock, webConfig())
	if got := described(r, "web"); len(got) != 2 || len(described(r, "api")) != 1 || r.Group("gone") != nil {
		t.Fatalf("imported: web %v, api %v, gone %v", got, described(r, "api"), r.Group("gone"))
	}
	if c, ok := st.contribution(t, "a", "api"); !ok || c.Settings == nil || len(c.registered()) != 1 {
		t.Fatalf("the import is not stored as a's contribution: %+v", c)
	}
	// A second node does not import them again.
	r2 := startNode(t, "b", st, clock, webConfig())
	if _, ok := st.contribution(t, "b", "api"); ok || len(described(r2, "api")) != 1 {
		t.Fatal("b imported the old records too, or does not see a's import")
	}
}

// BenchmarkFleetAtScale: 100 groups of 1,000 targets, created and
// registered through one node of three sharing a file system storage. It
// reports how long a peer's sync takes to catch up with all of it, and
// then, at that scale, what one change (a deregistration) costs: the write
// through the API,
// and the sync turn that puts it in force on a peer (what bounds the
// convergence time beside the sync interval).
//
//	go test ./targetgroup -run '^$' -bench FleetAtScale -benchtime 1x
func BenchmarkFleetAtScale(b *testing.B) {
	const groups, perGroup, batch = 100, 1000, 250
	for b.Loop() {
		b.StopTimer()
		st, clock := &certmagic.FileStorage{Path: b.TempDir()}, newTestClock()
		nodes := map[string]*Registry{}
		for _, n := range []string{"a", "b", "c"} {
			r := newRegistryOn(zap.NewNop(), clock)
			r.fleet.setNode(n)
			var s certmagic.Storage = st
			r.store.Store(&s)
			empty := map[string]*Group{}
			r.groups.Store(&empty)
			r.firstSync()
			nodes[n] = r
		}
		a := nodes["a"]
		for g := range groups {
			name := fmt.Sprintf("group-%03d", g)
			if _, _, err := a.CreateGroup(CreateRequest{Name: name, GroupConfig: GroupConfig{Port: 80, HealthCheck: &HealthCheckConfig{Enabled: &noChecks}}}); err != nil {
				b.Fatal(err)
			}
			for lo := 0; lo < perGroup; lo += batch {
				ts := make([]TargetConfig, batch)
				for i := range ts {
					n := g*perGroup + lo + i
					ts[i] = TargetConfig{ID: fmt.Sprintf("10.%d.%d.%d", n>>16&0xff, n>>8&0xff, n&0xff)}
				}
				if _, err := a.RegisterTargets(name, ts); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StartTimer()
		start := time.Now()
		nodes["b"].syncOnce()
		catchUp := time.Since(start)
		if n := len(nodes["b"].Groups()); n != groups {
			b.Fatalf("b holds %d groups after one sync", n)
		}
		start = time.Now()
		gone := TargetConfig{ID: "10.0.195.80", Port: 80} // the 50,000th: in group-050
		if err := a.DeregisterTargets("group-050", []TargetConfig{gone}); err != nil {
			b.Fatal(err)
		}
		write := time.Since(start)
		start = time.Now()
		nodes["b"].syncOnce()
		apply := time.Since(start)
		start = time.Now()
		nodes["b"].syncOnce()
		idle := time.Since(start)
		b.StopTimer()
		if d := nodes["b"].Group("group-050").DescribeTargetHealth(gone.Key()); d[0].TargetHealth.State != StateDraining {
			b.Fatalf("on b the deregistered target is %s", d[0].TargetHealth.State)
		}
		b.ReportMetric(float64(catchUp.Milliseconds()), "catch-up-ms")
		b.ReportMetric(float64(write.Microseconds())/1000, "change-write-ms")
		b.ReportMetric(float64(apply.Microseconds())/1000, "change-sync-ms")
		b.ReportMetric(float64(idle.Microseconds())/1000, "idle-sync-ms")
		for _, r := range nodes {
			_ = r.Destruct()
		}
		b.StartTimer()
	}
}
