package targetgroup

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// flakyStorage is a file system storage that fails (or blocks) on demand.
type flakyStorage struct {
	certmagic.Storage
	mu    sync.Mutex
	fail  func(ctx context.Context, op, key string) error
	calls map[string]int // "op key" → count
}

var errStorageDown = errors.New("storage is down")

func newFlakyStorage(t *testing.T) *flakyStorage {
	return &flakyStorage{Storage: &certmagic.FileStorage{Path: t.TempDir()}, calls: map[string]int{}}
}

// failing makes every call of the given operations fail; no operation
// means every operation.
func (s *flakyStorage) failing(ops ...string) {
	s.setFail(func(_ context.Context, op, _ string) error {
		if len(ops) == 0 {
			return errStorageDown
		}
		for _, o := range ops {
			if o == op {
				return errStorageDown
			}
		}
		return nil
	})
}

func (s *flakyStorage) setFail(f func(ctx context.Context, op, key string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = f
}

func (s *flakyStorage) heal() { s.setFail(nil) }

func (s *flakyStorage) count(op, key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op+" "+key]
}

func (s *flakyStorage) check(ctx context.Context, op, key string) error {
	s.mu.Lock()
	s.calls[op+" "+key]++
	f := s.fail
	s.mu.Unlock()
	if f != nil {
		return f(ctx, op, key)
	}
	return nil
}

func (s *flakyStorage) Lock(ctx context.Context, key string) error {
	if err := s.check(ctx, "Lock", key); err != nil {
		return err
	}
	return s.Storage.Lock(ctx, key)
}

func (s *flakyStorage) Unlock(ctx context.Context, key string) error {
	if err := s.check(ctx, "Unlock", key); err != nil {
		return err
	}
	return s.Storage.Unlock(ctx, key)
}

func (s *flakyStorage) Store(ctx context.Context, key string, value []byte) error {
	if err := s.check(ctx, "Store", key); err != nil {
		return err
	}
	return s.Storage.Store(ctx, key, value)
}

func (s *flakyStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := s.check(ctx, "Load", key); err != nil {
		return nil, err
	}
	return s.Storage.Load(ctx, key)
}

func (s *flakyStorage) Delete(ctx context.Context, key string) error {
	if err := s.check(ctx, "Delete", key); err != nil {
		return err
	}
	return s.Storage.Delete(ctx, key)
}

func (s *flakyStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if err := s.check(ctx, "List", prefix); err != nil {
		return nil, err
	}
	return s.Storage.List(ctx, prefix, recursive)
}

// contribution reads a node's stored contribution to a group; ok is false
// when there is none.
func (s *flakyStorage) contribution(t *testing.T, node, group string) (c contribution, ok bool) {
	t.Helper()
	raw, err := s.Storage.Load(context.Background(), contributionKey(node, group))
	if errors.Is(err, fs.ErrNotExist) {
		return c, false
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c, true
}

// registered lists the targets a stored contribution registers.
func (c contribution) registered() []TargetKey {
	var out []TargetKey
	for _, e := range c.Targets {
		if e.Op == opRegister {
			out = append(out, e.Key())
		}
	}
	return out
}

func newTestClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// startRegistry starts node "a" on st as the first config load does: the
// config's groups (each with its config targets) first, then the first
// sync. setup, when given, runs before the sync.
func startRegistry(t *testing.T, st certmagic.Storage, clock *fakeClock, config map[string]*GroupConfig, setup ...func(*Registry)) *Registry {
	t.Helper()
	return startNode(t, "a", st, clock, config, setup...)
}

// startNode starts the named node of a fleet on st.
func startNode(t *testing.T, node string, st certmagic.Storage, clock *fakeClock, config map[string]*GroupConfig, setup ...func(*Registry)) *Registry {
	t.Helper()
	r := newRegistryOn(zap.NewNop(), clock)
	r.fleet.setNode(node)
	if st != nil {
		r.store.Store(&st)
	}
	for _, f := range setup {
		f(r)
	}
	t.Cleanup(func() { _ = r.Destruct() })
	next := map[string]*Group{}
	for name, c := range config {
		spec := mustSpec(t, c)
		g := newGroup(r, name, spec, SourceConfig)
		g.lock()
		g.register(spec.Config.Targets, ownerConfig)
		g.publish()
		g.unlock()
		next[name] = g
	}
	r.mu.Lock()
	r.groups.Store(&next)
	r.mu.Unlock()
	r.firstSync()
	return r
}

var noChecks = false

// webConfig is a config group with one config target on port 1.
func webConfig() map[string]*GroupConfig {
	return map[string]*GroupConfig{"web": {
		HealthCheck: &HealthCheckConfig{Enabled: &noChecks},
		Targets:     []TargetConfig{{ID: "127.0.0.1", Port: 1, AvailabilityZone: "a"}},
	}}
}

func local(ports ...int) []TargetConfig {
	ts := make([]TargetConfig, len(ports))
	for i, p := range ports {
		ts[i] = TargetConfig{ID: "127.0.0.1", Port: p}
	}
	return ts
}

// described lists a group's targets as "id:port state".
func described(r *Registry, name string) []string {
	g := r.Group(name)
	if g == nil {
		return nil
	}
	var out []string
	for _, d := range g.DescribeTargetHealth() {
		out = append(out, d.Target.Key().String()+" "+string(d.TargetHealth.State))
	}
	return out
}

// expectRefusal checks that err is a refusal of the given kind (adminapi's
// tests check the status and code each kind is answered with).
func expectRefusal(t *testing.T, what string, err error, kind Kind) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Kind != kind {
		t.Fatalf("%s: got %v, want a refusal of kind %s", what, err, kind)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustRegister(t *testing.T, r *Registry, group string, ts []TargetConfig) {
	t.Helper()
	if _, err := r.RegisterTargets(group, ts); err != nil {
		t.Fatalf("registering into %s: %v", group, err)
	}
}

func mustCreate(t *testing.T, r *Registry, req CreateRequest) *Group {
	t.Helper()
	g, _, err := r.CreateGroup(req)
	if err != nil {
		t.Fatalf("creating %s: %v", req.Name, err)
	}
	return g
}

func apiGroup(name string, port int, targets ...TargetConfig) CreateRequest {
	return CreateRequest{Name: name, GroupConfig: GroupConfig{Port: port, HealthCheck: &HealthCheckConfig{Enabled: &noChecks}, Targets: targets}}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Storage that can't be read at the start leaves the config's groups in
// force and refuses every API write, which changes nothing, until a sync
// reads it; then the fleet's groups are back and writes are taken.
func TestStorageDownAtStartRefusesWritesUntilRead(t *testing.T) {
	st, clock := newFlakyStorage(t), newTestClock()
	r1 := startRegistry(t, st, clock, webConfig())
	mustRegister(t, r1, "web", local(2, 3, 4))
	mustCreate(t, r1, apiGroup("api", 80, TargetConfig{ID: "10.0.0.1"}))
	must(t, r1.Destruct())

	st.failing("List")
	r2 := startRegistry(t, st, clock, webConfig())
	if got := described(r2, "web"); len(got) != 1 || r2.Group("api") != nil {
		t.Fatalf("restored without a listing: web %v, api %v", got, r2.Group("api"))
	}
	before := fingerprint(t, r2)
	_, err := r2.RegisterTargets("web", local(5))
	expectRefusal(t, "register", err, KindStorageUnavailable)
	expectRefusal(t, "deregister", r2.DeregisterTargets("web", local(2)), KindStorageUnavailable)
	_, _, err = r2.CreateGroup(apiGroup("api", 81))
	expectRefusal(t, "create", err, KindStorageUnavailable)
	_, _, err = r2.CreateGroup(apiGroup("fresh", 81))
	expectRefusal(t, "create another name", err, KindStorageUnavailable)
	if after := fingerprint(t, r2); after != before {
		t.Fatalf("refused writes changed the state:\nbefore %s\nafter  %s", before, after)
	}
	r2.syncOnce() // still down
	if r2.Group("api") != nil {
		t.Fatal("a failed sync restored the api group")
	}

	st.heal()
	r2.syncOnce()
	if got := described(r2, "web"); len(got) != 4 || r2.Group("api") == nil {
		t.Fatalf("after the storage came back: web %v, api %v", got, r2.Group("api"))
	}
	mustRegister(t, r2, "web", local(5))
	must(t, r2.Destruct())

	r3 := startRegistry(t, st, clock, webConfig())
	if got := described(r3, "web"); len(got) != 5 || len(described(r3, "api")) != 1 {
		t.Fatalf("after the next restart: web %v, api %v", got, described(r3, "api"))
	}
}

// A change that can't be stored is refused with 503 StorageUnavailable and
// changes nothing; once the storage is back, a restart brings back exactly
// what was acknowledged.
func TestUnstorableChangeChangesNothing(t *testing.T) {
	st, clock := newFlakyStorage(t), newTestClock()
	r := startRegistry(t, st, clock, webConfig())
	mustRegister(t, r, "web", local(2, 3))
	mustCreate(t, r, apiGroup("api", 80, TargetConfig{ID: "10.0.0.1"}))

	st.failing("Store")
	before := fingerprint(t, r)
	calls := map[string]func() error{
		"register":   func() error { _, err := r.RegisterTargets("web", local(4)); return err },
		"deregister": func() error { return r.DeregisterTargets("web", local(2)) },
		"create":     func() error { _, _, err := r.CreateGroup(apiGroup("fresh", 80)); return err },
		"modify health check": func() error {
			return r.ModifyHealthCheck("api", map[string]json.RawMessage{"health_check": json.RawMessage(`{"path":"/ready"}`)})
		},
		"modify attributes": func() error { return r.ModifyAttributes("api", map[string]string{AttrDeregistrationDelay: "5"}) },
		"delete":            func() error { return r.DeleteGroup("api") },
	}
	for what, call := range calls {
		err := call()
		expectRefusal(t, what, err, KindStorageUnavailable)
		if !strings.Contains(err.Error(), "not changed") {
			t.Errorf("%s: the message does not say nothing changed: %v", what, err)
		}
		if after := fingerprint(t, r); after != before {
			t.Fatalf("%s was refused but changed the state:\nbefore %s\nafter  %s", what, before, after)
		}
	}
	// Re-registering a config target as the config has it stores
	// nothing, so it succeeds.
	mustRegister(t, r, "web", []TargetConfig{{ID: "127.0.0.1", Port: 1, AvailabilityZone: "a"}})

	st.heal()
	mustRegister(t, r, "web", local(4))
	must(t, r.DeregisterTargets("web", local(2)))
	must(t, r.ModifyAttributes("api", map[string]string{AttrDeregistrationDelay: "5"}))
	want := described(r, "web")
	must(t, r.Destruct())

	r2 := startRegistry(t, st, clock, webConfig())
	got := described(r2, "web")
	// The deregistered target stays away after the restart; the others are back.
	if len(got) != 3 || len(want) != 4 || strings.Join(got, ",") != "127.0.0.1:1 unavailable,127.0.0.1:3 unavailable,127.0.0.1:4 unavailable" {
		t.Fatalf("after the restart web holds %v (before: %v)", got, want)
	}
	if a := r2.Group("api"); a == nil || a.Spec().Config.Attributes[AttrDeregistrationDelay] != "5" {
		t.Fatalf("api after the restart: %v", a)
	}
}

// holdStore blocks the first write of name's record until release is
// closed; written is closed once the write is blocked.
func holdStore(st *flakyStorage, name string) (written, release chan struct{}) {
	written, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	st.setFail(func(_ context.Context, op, key string) error {
		if op == "Store" && key == contributionKey("a", name) {
			once.Do(func() {
				close(written)
				<-release
			})
		}
		return nil
	})
	return written, release
}

// A config load that comes in while a change's record is being written
// does not lose to the change: the change is validated again against what
// the load put in force before it applies, refused when it no longer fits,
// and the stored contribution is put back as it was.
func TestChangeOvertakenByConfigLoad(t *testing.T) {
	st := newFlakyStorage(t)
	r := startRegistry(t, st, newTestClock(), webConfig())
	api := mustCreate(t, r, apiGroup("api", 80))

	// A load narrows allowed_cidrs while a registration is being stored.
	written, release := holdStore(st, "web")
	done := make(chan error, 1)
	go func() { _, err := r.RegisterTargets("web", local(5)); done <- err }()
	<-written
	narrow, err := ParseCIDRs([]string{"10.0.0.0/8"})
	must(t, err)
	r.allowed.Store(&narrow)
	close(release)
	if err := <-done; !IsValidationError(err) || !strings.Contains(err.Error(), "targets[0].id") {
		t.Fatalf("registration overtaken by a load: %v, want it refused on targets[0].id", err)
	}
	if got := described(r, "web"); len(got) != 1 {
		t.Fatalf("web holds %v, want its config target only", got)
	}
	if c, _ := st.contribution(t, "a", "web"); len(c.registered()) != 0 {
		t.Fatalf("the stored contribution keeps the refused target: %+v", c.Targets)
	}

	// A load takes an API group over while its attributes change.
	written, release = holdStore(st, "api")
	go func() { done <- r.ModifyAttributes("api", map[string]string{AttrDeregistrationDelay: "5"}) }()
	<-written
	api.lock()
	api.source = SourceConfig
	api.unlock()
	close(release)
	expectRefusal(t, "modifying a group the config took over", <-done, KindNotPermitted)
	if v := api.Spec().Config.Attributes[AttrDeregistrationDelay]; v != "300" {
		t.Fatalf("the refused change applied: deregistration delay %s", v)
	}
	if c, _ := st.contribution(t, "a", "api"); c.Settings == nil || c.Settings.Config.Attributes[AttrDeregistrationDelay] == "5" {
		t.Fatalf("the stored contribution keeps the refused change: %+v", c.Settings)
	}
}

// A delete and a create of one name are stored in the order they happen:
// the delete's record can't land last and remove the new group at the
// next start.
func TestDeleteThenCreateOfOneNameAreStoredInOrder(t *testing.T) {
	st, clock := newFlakyStorage(t), newTestClock()
	r := startRegistry(t, st, clock, nil)
	mustCreate(t, r, apiGroup("api", 80))

	blocked, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	st.setFail(func(_ context.Context, op, key string) error {
		if op == "Store" && key == contributionKey("a", "api") && r.Group("api") != nil && r.Group("api").Spec().Config.Port == 80 {
			// The delete's write: hold it until the create has been asked for.
			once.Do(func() { close(blocked) })
			<-release
		}
		return nil
	})
	deleted := make(chan error, 1)
	go func() { deleted <- r.DeleteGroup("api") }()
	<-blocked
	created := make(chan error, 1)
	go func() { _, _, err := r.CreateGroup(apiGroup("api", 81)); created <- err }()
	eventually(t, "the create to wait for the delete", func() bool {
		select {
		case err := <-created:
			created <- err
			return true
		default:
			return r.names.holders("api") == 2
		}
	})
	close(release)
	must(t, <-deleted)
	must(t, <-created)
	if g := r.Group("api"); g == nil || g.Spec().Config.Port != 81 {
		t.Fatal("the new group is not in force")
	}
	must(t, r.Destruct())
	r2 := startRegistry(t, st, clock, nil)
	if g := r2.Group("api"); g == nil || g.Spec().Config.Port != 81 {
		t.Fatalf("after a restart the new group is gone: %v", g)
	}
}

// A deregistration is kept in the contribution for a day after its drain
// ended, so that no node's older registration outlives it, and dropped at
// the node's next write after that.
func TestDeregistrationsAreDroppedADayAfterTheirDrain(t *testing.T) {
	st, clock := newFlakyStorage(t), newTestClock()
	r := startRegistry(t, st, clock, webConfig())
	mustRegister(t, r, "web", local(2, 3))
	must(t, r.DeregisterTargets("web", local(2)))
	entry := func() (targetEntry, bool) {
		c, _ := st.contribution(t, "a", "web")
		for _, e := range c.Targets {
			if e.Port == 2 {
				return e, true
			}
		}
		return targetEntry{}, false
	}
	if e, ok := entry(); !ok || e.Op != opDeregister || !e.Until.Equal(clock.Now().Add(300*time.Second)) {
		t.Fatalf("stored deregistration %+v (%v)", e, ok)
	}
	clock.Advance(300*time.Second + tombstoneTTL - time.Minute)
	mustRegister(t, r, "web", local(4))
	if _, ok := entry(); !ok {
		t.Fatal("the deregistration went before its time")
	}
	clock.Advance(2 * time.Minute)
	mustRegister(t, r, "web", local(5))
	if e, ok := entry(); ok {
		t.Fatalf("a deregistration a day past its drain is still stored: %+v", e)
	}
	if got := described(r, "web"); strings.Join(got, ",") != "127.0.0.1:1 unavailable,127.0.0.1:3 unavailable,127.0.0.1:4 unavailable,127.0.0.1:5 unavailable" {
		t.Fatalf("web holds %v", got)
	}
}

// Restore applies max_targets_per_group, config targets included.
func TestRestoreAppliesTheTargetQuota(t *testing.T) {
	st, clock := newFlakyStorage(t), newTestClock()
	r1 := startRegistry(t, st, clock, webConfig())
	mustRegister(t, r1, "web", local(2, 3, 4, 5, 6, 7))
	must(t, r1.Destruct())
	r2 := startRegistry(t, st, clock, webConfig(), func(r *Registry) {
		limits := Limits{MaxTargetsPerGroup: 4}.withDefaults()
		r.limits.Store(&limits)
	})
	if got := described(r2, "web"); len(got) != 4 {
		t.Fatalf("restored %v under a quota of 4", got)
	}
}

// A stored target that no longer fits the config comes back unused rather
// than being dropped, so that the next write keeps it in the record.
func TestRestoreKeepsTargetsThatNoLongerFit(t *testing.T) {
	st, clock := newFlakyStorage(t), newTestClock()
	r1 := startRegistry(t, st, clock, webConfig())
	mustRegister(t, r1, "web", []TargetConfig{{ID: "10.0.0.7", Port: 80}})
	must(t, r1.Destruct())
	narrow := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	r2 := startRegistry(t, st, clock, webConfig(), func(r *Registry) { r.allowed.Store(&narrow) })
	d := r2.Group("web").DescribeTargetHealth(TargetKey{ID: "10.0.0.7", Port: 80})[0].TargetHealth
	if d.State != StateUnused || d.Reason != ReasonInvalidState {
		t.Fatalf("a stored target outside allowed_cidrs is %s (%s)", d.State, d.Reason)
	}
	mustRegister(t, r2, "web", local(2))
	if c, _ := st.contribution(t, "a", "web"); len(c.registered()) != 2 {
		t.Fatalf("the contribution lost the target that does not fit: %v", c.Targets)
	}
}
