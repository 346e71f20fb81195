package targetgroup

import (
	"context"
	"net"
	"net/netip"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-targetgroup/caddy-targetgroup/healthcheck"
	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
)

// registries holds the one live Registry of the process. Every loaded
// target_groups app takes a reference, so the registry (targets, health,
// in-flight counts) outlives config reloads: the new config takes its
// reference before the old one lets go.
var registries = caddy.NewUsagePool()

const registryKey = "target_groups"

// current is the registry of the running app, for the admin API, which is
// rebuilt before apps on every load and must look the state up per request.
var current atomic.Pointer[Registry]

// Current returns the live registry, or nil when no target_groups app runs.
func Current() *Registry { return current.Load() }

// Registry owns every target group of the process.
type Registry struct {
	mu       sync.Mutex // serialises changes to the set of groups and config loads
	groups   atomic.Pointer[map[string]*Group]
	allowed  atomic.Pointer[[]netip.Prefix]
	store    atomic.Pointer[certmagic.Storage]
	limits   atomic.Pointer[Limits]
	zone     atomic.Pointer[string]
	keyring  atomic.Pointer[selection.Keyring]
	keyMu    sync.Mutex
	memKeys  []selection.Key // the ring's keys, guarded by keyMu
	stop     chan struct{}   // closed by Destruct; ends background loops
	stopOnce sync.Once

	logger  *zap.Logger
	sched   *healthcheck.Scheduler
	prober  *healthcheck.Prober
	started bool
	applied *App              // the app whose config is in force
	tokens  map[string]string // CreateTargetGroup client tokens → group name
	// names serialises the changes of one group name with the writes of
	// their records (change.go).
	names nameLocks
	// fleet is this node's part of the state the nodes sharing the
	// storage share (fleet.go); syncEvery is the sync loop's period in
	// nanoseconds (0: the default), syncDue wakes the loop.
	fleet     *fleet
	syncEvery atomic.Int64
	syncDue   chan struct{}
	// syncing is the sync loop, which Destruct waits for: no write of
	// the loop may land in storage after the registry is gone.
	syncing sync.WaitGroup
	// account holds the region and account id that ARNs name.
	account atomic.Pointer[account]
	// eventQ holds the events to emit (events.go).
	eventQ          chan event
	eventDropLogged atomic.Int64
	// observe, when set, sees every event emitted (tests).
	observe func(name string, data map[string]any)
	clock   clock
	// mitigateEvery and rotateKeysEvery are the periods of the background
	// loops (startLoops): anomaly mitigation over every group, and the
	// re-read of the sticky cookie key ring that other nodes may have
	// rotated.
	mitigateEvery, rotateKeysEvery time.Duration
	// resolver resolves host-name targets (instance, alb).
	resolver resolver
	// lambda is the invoker of the config in force, for health checks of
	// lambda groups.
	lambda atomic.Pointer[lambdaHolder]
}

func newRegistry(logger *zap.Logger) *Registry {
	return newRegistryOn(logger, healthcheck.SystemClock{})
}

// newRegistryOn is newRegistry on the clock c.
func newRegistryOn(logger *zap.Logger, c clock) *Registry {
	r := &Registry{
		logger: logger,
		sched:  healthcheck.NewScheduler(0, healthcheck.WithClock(c)),
		prober: healthcheck.NewProber(),
		clock:  c,
		tokens: map[string]string{},

		mitigateEvery:   5 * time.Second,
		rotateKeysEvery: time.Hour,

		resolver: net.DefaultResolver,
		stop:     make(chan struct{}),
		syncDue:  make(chan struct{}, 1),
		eventQ:   make(chan event, eventQueueSize),
	}
	r.fleet = newFleet("", c.Now)
	// A check that panics is a bug of ours; the scheduler keeps going and
	// the log says where.
	r.sched.SetPanicHandler(func(key string, recovered any, stack []byte) {
		logger.Error("health check panicked", zap.String("job", strings.ReplaceAll(key, "\x00", " ")), zap.Any("panic", recovered), zap.ByteString("stack", stack))
	})
	limits := Limits{}.withDefaults()
	r.limits.Store(&limits)
	empty := map[string]*Group{}
	r.groups.Store(&empty)
	def, _ := ParseCIDRs(nil)
	r.allowed.Store(&def)
	return r
}

// Destruct stops health checks and drain timers when the last app using the
// registry is cleaned up.
func (r *Registry) Destruct() error {
	current.CompareAndSwap(r, nil)
	// The sync loop ends first (its turn may need r.mu), so that it writes
	// nothing once Destruct returns.
	r.stopOnce.Do(func() { close(r.stop) })
	r.syncing.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range *r.groups.Load() {
		g.close()
	}
	r.sched.Stop()
	r.prober.Close()
	return nil
}

// Group returns the named group or nil. It takes no lock.
func (r *Registry) Group(name string) *Group { return (*r.groups.Load())[name] }

// Groups returns every group, sorted by name.
func (r *Registry) Groups() []*Group {
	m := *r.groups.Load()
	out := make([]*Group, 0, len(m))
	for _, g := range m {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// InUse reports whether a route of the running config uses the group.
func (r *Registry) InUse(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied != nil && r.applied.refs[name] > 0
}

type account struct{ region, id string }

// ARN defaults: those of the app fields region and account_id.
const (
	defaultRegion    = "us-east-1"
	defaultAccountID = "000000000000"
)

// Account returns the region and account id that ARNs name.
func (r *Registry) Account() (region, id string) {
	if a := r.account.Load(); a != nil {
		return a.region, a.id
	}
	return defaultRegion, defaultAccountID
}

// Zone is this node's availability zone ("" when none is set).
func (r *Registry) Zone() string {
	if z := r.zone.Load(); z != nil {
		return *z
	}
	return ""
}

// Limits returns the quotas in force.
func (r *Registry) Limits() Limits { return *r.limits.Load() }

// Allowed returns the CIDR blocks that ip targets must fall in.
func (r *Registry) Allowed() []netip.Prefix { return *r.allowed.Load() }

func schedKey(g *Group, t *Target) string { return g.name + "\x00" + t.Key().String() }

// schedule (re)starts the periodic health check of t under g's spec; with
// checks off, a host name is still resolved on that schedule. Called with
// g.mu held.
func (r *Registry) schedule(g *Group, t *Target) {
	hc := g.spec.HealthCheck
	if !hc.Enabled && !t.named() || t.misfit != "" {
		r.sched.Remove(schedKey(g, t))
		return
	}
	r.sched.Upsert(g.name, schedKey(g, t), hc.Interval, func(ctx context.Context) { g.check(ctx, t) })
}

func (r *Registry) unschedule(g *Group, t *Target) { r.sched.Remove(schedKey(g, t)) }

// apply puts an app's config in force: config groups are created or
// updated (keeping every target's health), their config targets reconciled,
// and config groups no longer declared are removed. Groups created through
// the API and targets registered through the API are left alone. It
// reports whether this was the registry's first start.
func (r *Registry) apply(a *App) (first bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	allowed, limits, st := a.allowed, a.limits, a.ctx.Storage()
	r.allowed.Store(&allowed)
	r.limits.Store(&limits)
	zone := a.Zone
	r.zone.Store(&zone)
	setPerTargetMetrics(a.PerTargetMetrics == nil || *a.PerTargetMetrics)
	r.account.Store(&account{region: a.Region, id: a.AccountID})
	r.lambda.Store(&lambdaHolder{inv: a.lambda})
	if st != nil {
		r.store.Store(&st)
	}
	next := make(map[string]*Group, len(*r.groups.Load())+len(a.specs))
	for name, g := range *r.groups.Load() {
		next[name] = g
	}
	for name, spec := range a.specs {
		g := next[name]
		if g == nil {
			g = newGroup(r, name, spec, SourceConfig)
			next[name] = g
			r.emit(groupEvent("target_group_created", g))
		}
		g.lock()
		if g.spec != spec {
			g.setSpec(spec)
		}
		if g.source != SourceConfig {
			r.logger.Info("config now owns target group created through the API", zap.String("group", name))
		}
		if g.clientToken != "" && r.tokens[g.clientToken] == name {
			delete(r.tokens, g.clientToken)
		}
		g.source, g.created, g.clientToken = SourceConfig, nil, ""
		g.reconcileConfigTargets(spec.Config.Targets)
		g.publish()
		g.unlock()
	}
	for name, g := range next {
		if _, declared := a.specs[name]; !declared && g.Source() == SourceConfig {
			r.logger.Info("target group removed from the config", zap.String("group", name))
			g.close()
			r.emit(groupEvent("target_group_deleted", g))
			delete(next, name)
		}
	}
	// Targets registered through the API were checked against the config
	// of their day; a load re-checks them all (and republishes every group,
	// which a changed zone needs too).
	for _, g := range next {
		g.lock()
		g.revalidate(allowed)
		g.publish()
		g.unlock()
	}
	r.groups.Store(&next)
	r.applied = a
	r.syncEvery.Store(int64(a.syncInterval))
	first = !r.started
	if first {
		r.fleet.setNode(a.nodeID)
		r.start()
	} else if a.nodeID != r.fleet.node {
		r.logger.Warn("node_id changes at the next start of Caddy, not at a config load", zap.String("node_id", r.fleet.node), zap.String("configured", a.nodeID))
	}
	current.Store(r)
	return first
}

// start begins what runs for the registry's whole life: the health-check
// scheduler and the background loops. Called once, with mu held.
func (r *Registry) start() {
	r.runEvents()
	r.sched.Start()
	r.started = true
	r.startLoops()
}

// startLoops reads the sticky cookie key ring, then starts the loops that
// re-read it and that run anomaly mitigation over every group.
func (r *Registry) startLoops() {
	if err := r.rotateKeys(); err != nil {
		r.logger.Error("loading sticky cookie keys; lb_cookie stickiness is off until they load", zap.Error(err))
	}
	r.every("sticky cookie key rotation", r.rotateKeysEvery, func() {
		if err := r.rotateKeys(); err != nil {
			r.logger.Error("rotating sticky cookie keys", zap.Error(err))
		}
	})
	r.every("anomaly mitigation", r.mitigateEvery, func() {
		now := r.clock.Now()
		for _, g := range r.Groups() {
			g.mitigate(now)
		}
	})
}

// every runs f each period on the registry's clock, from a goroutine of
// its own, until the registry is destructed. A period starts when the
// previous run ends, so runs never overlap; the first is due one period
// after the call.
func (r *Registry) every(what string, period time.Duration, f func()) {
	due := make(chan struct{}, 1)
	t := r.clock.AfterFunc(period, func() {
		select {
		case due <- struct{}{}:
		default:
		}
	})
	go func() {
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-due:
				r.runLogged(what, f)
				t.Reset(period)
			}
		}
	}()
}

// runLogged runs one turn of a background loop. A panic is a bug of ours:
// it is logged with its stack, and the loop goes on at its next turn
// rather than stop for good or take the process down.
func (r *Registry) runLogged(what string, f func()) {
	defer func() {
		if v := recover(); v != nil {
			r.logger.Error(what+" panicked", zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
		}
	}()
	f()
}
