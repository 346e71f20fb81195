package targetgroup

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-targetgroup/caddy-targetgroup/healthcheck"
	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
)

// State is a target's health state as DescribeTargetHealth reports it.
type State string

// Target states of the AWS documents.
const (
	StateInitial           State = "initial"
	StateHealthy           State = "healthy"
	StateUnhealthy         State = "unhealthy"
	StateUnhealthyDraining State = "unhealthy.draining"
	StateDraining          State = "draining"
	StateUnused            State = "unused"
	StateUnavailable       State = "unavailable"
)

// Reason codes of the AWS documents.
const (
	ReasonRegistrationInProgress   = "Elb.RegistrationInProgress"
	ReasonInitialHealthChecking    = "Elb.InitialHealthChecking"
	ReasonResponseCodeMismatch     = healthcheck.ReasonResponseCodeMismatch
	ReasonTimeout                  = healthcheck.ReasonTimeout
	ReasonFailedHealthChecks       = healthcheck.ReasonFailedHealthChecks
	ReasonDeregistrationInProgress = "Target.DeregistrationInProgress"
	ReasonHealthCheckDisabled      = "Target.HealthCheckDisabled"
	ReasonNotRegistered            = "Target.NotRegistered"
	ReasonNotInUse                 = "Target.NotInUse"
	ReasonInvalidState             = "Target.InvalidState"
)

// owner says who registered a target: the config or the admin API. Config
// targets change only through the config.
type owner uint8

const (
	ownerAPI owner = iota
	ownerConfig
)

// Target is one registered target of a group. Its identity (key, dial)
// never changes; its registration (zone, weight) and state are guarded by the
// group's mutex and published to the request path through snapshots; its
// in-flight counter and resolved address are atomics the request path reads
// without any lock.
type Target struct {
	key  TargetKey
	dial string
	// ip is the target's address for an ip target (or an alb target given
	// by address); the zero Addr for a host name.
	ip netip.Addr
	// addr is where connections go: ip, or what the host name last resolved
	// to inside allowed_cidrs; nil while a host name has no such address.
	addr atomic.Pointer[dialAddr]

	// metrics are the target's series (metrics.go).
	metrics  *targetMetrics
	inflight atomic.Int64
	draining atomic.Bool
	// consecutive failed proxied requests, for passive health
	proxyFails atomic.Int32
	// request outcomes, for anomaly mitigation
	stats selection.Stats

	// memo is the proxy layer's per-target cache (the sticky cookie it
	// sealed last); nothing here reads it.
	memo atomic.Value

	// Open layer 4 connections, closed when the group's attributes ask for
	// it (end of the deregistration delay, target turned unhealthy).
	connMu sync.Mutex
	conns  map[*trackedConn]struct{}
	// group is the target's group: its lock guards the fields below, and
	// it hears when a draining target's last lease is released.
	group *Group

	// guarded by group.mu
	cfg   TargetConfig
	owner owner
	// misfit says why the target no longer fits its group's configuration
	// (a reload changed allowed_cidrs, the type, ...): it is unused and
	// unchecked until a later reload makes it fit again.
	misfit       string
	state        State
	reason       string
	description  string
	threshold    healthcheck.Threshold
	registeredAt time.Time
	drainUntil   time.Time
	// slowStartSince is when the target entered slow start (zero: not in it);
	// noSlowStart exempts targets registered together into an empty group.
	slowStartSince time.Time
	noSlowStart    bool
	drainTimer     stopper
	// unhealthyTimer ends unhealthy.draining
	unhealthyTimer stopper
}

// ProxyMemo is a slot the proxy layer caches a per-target value in, such as
// the sticky cookie it sealed last. It always holds values of one type.
func (t *Target) ProxyMemo() *atomic.Value { return &t.memo }

// dialAddr is a checked address to connect to, with its string form, so
// that the request path does not format it for every connection.
type dialAddr struct {
	ap netip.AddrPort
	s  string
}

func newDialAddr(ip netip.Addr, port int) *dialAddr {
	ap := netip.AddrPortFrom(ip, uint16(port))
	return &dialAddr{ap: ap, s: ap.String()}
}

func newTarget(g *Group, cfg TargetConfig, o owner, now time.Time) *Target {
	t := &Target{key: cfg.Key(), cfg: cfg, group: g, owner: o, registeredAt: now, metrics: newTargetMetrics(g.name, cfg.Key())}
	if cfg.Port != 0 {
		t.dial = net.JoinHostPort(cfg.ID, strconv.Itoa(cfg.Port))
	} else {
		t.dial = cfg.ID
	}
	if ip, err := netip.ParseAddr(cfg.ID); err == nil {
		t.ip = ip.Unmap()
		t.addr.Store(newDialAddr(t.ip, cfg.Port))
	}
	return t
}

// named reports whether the target is a host name, resolved at every check.
func (t *Target) named() bool { return !t.ip.IsValid() && t.group.spec.Config.Type != TypeLambda }

// multiplier is anomaly mitigation's weight multiplier, kept by the
// target's stats. Called with the group's mutex held, as mitigate is.
func (t *Target) multiplier() float64 { return t.stats.Multiplier() }

// Key is the target's (id, port). It never changes.
func (t *Target) Key() TargetKey { return t.key }

// Config is the target as it was registered (port filled in). It takes the
// group's lock: the request path uses Key.
func (t *Target) Config() TargetConfig {
	t.group.mu.Lock()
	defer t.group.mu.Unlock()
	return t.cfg
}

// Dial is the address to connect to, "host:port".
func (t *Target) Dial() string { return t.dial }

// DialAddr is the address to connect to now, "ip:port": for an ip target
// its own address, for a host name the address it last resolved to inside
// allowed_cidrs. It is checked against the allow-list in force at every
// call, so nothing outside it is ever dialed, whatever a name resolves to
// later; an error says why there is no address to dial.
func (t *Target) DialAddr() (string, error) {
	a := t.addr.Load()
	if a == nil {
		return "", fmt.Errorf("target %s has no address inside allowed_cidrs yet", t.dial)
	}
	if err := t.group.reg.checkDial(a.ap); err != nil {
		return "", err
	}
	return a.s, nil
}

// InFlight is the number of requests (or connections) through this Caddy
// that are currently using the target.
func (t *Target) InFlight() int64 { return t.inflight.Load() }

// Acquire counts one request or connection against the target until the
// returned lease is released. It is safe for concurrent use and lock-free.
func (t *Target) Acquire() *Lease {
	t.inflight.Add(1)
	return &Lease{target: t}
}

// Lease is one in-flight use of a target. Release is idempotent.
type Lease struct {
	target   *Target
	released atomic.Bool
}

// Target is the leased target.
func (l *Lease) Target() *Target { return l.target }

// Release ends the use of the target. Releasing the last lease of a
// draining target reports it drained.
func (l *Lease) Release() {
	if l == nil || !l.released.CompareAndSwap(false, true) {
		return
	}
	l.release()
}

// End ends the lease of one proxied request: the target's metrics get the
// status it answered (code; 0 when it did not) and the latency, anomaly
// detection the latency and outcome, passive health the outcome (desc
// says why it failed), and the lease is released. Only the first End or
// Release of a lease counts.
func (l *Lease) End(latency time.Duration, code int, failed bool, desc string) {
	if l == nil || !l.released.CompareAndSwap(false, true) {
		return
	}
	t := l.target
	t.metrics.request(code, latency)
	t.group.ObserveRequest(t, latency, failed)
	t.group.ReportProxyResult(t, failed, desc)
	l.release()
}

func (l *Lease) release() {
	t := l.target
	if t.inflight.Add(-1) == 0 && t.draining.Load() {
		t.group.drained(t)
	}
}

type trackedConn struct{ c io.Closer }

// TrackConn records an open connection to the target until untrack is
// called, so that it can be closed when the target's connections must end.
func (t *Target) TrackConn(c io.Closer) (untrack func()) {
	e := &trackedConn{c: c}
	t.connMu.Lock()
	if t.conns == nil {
		t.conns = make(map[*trackedConn]struct{})
	}
	t.conns[e] = struct{}{}
	t.connMu.Unlock()
	return func() {
		t.connMu.Lock()
		delete(t.conns, e)
		t.connMu.Unlock()
	}
}

// closeConns closes every tracked connection and reports how many.
func (t *Target) closeConns() int {
	t.connMu.Lock()
	cs := make([]io.Closer, 0, len(t.conns))
	for e := range t.conns {
		cs = append(cs, e.c)
	}
	t.conns = nil
	t.connMu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
	return len(cs)
}
