package targetgroup

import (
	"io"
	"net"
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

// Target is one registered target of a group. Its identity and dial address
// never change; its state is guarded by the group's mutex and published to
// the request path through snapshots; its in-flight counter is an atomic the
// request path updates without any lock.
type Target struct {
	cfg  TargetConfig
	dial string

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
	// onIdle runs when a draining target's last in-flight request ends.
	group *Group

	// guarded by group.mu
	owner        owner
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
	mult           float64 // anomaly mitigation's weight multiplier; 0 means 1
	// unhealthyTimer ends unhealthy.draining
	unhealthyTimer stopper
}

// ProxyMemo is a slot the proxy layer caches a per-target value in, such as
// the sticky cookie it sealed last. It always holds values of one type.
func (t *Target) ProxyMemo() *atomic.Value { return &t.memo }

func newTarget(g *Group, cfg TargetConfig, o owner, now time.Time) *Target {
	t := &Target{cfg: cfg, group: g, owner: o, registeredAt: now}
	if cfg.Port != 0 {
		t.dial = net.JoinHostPort(cfg.ID, strconv.Itoa(cfg.Port))
	} else {
		t.dial = cfg.ID
	}
	return t
}

func (t *Target) multiplier() float64 {
	if t.mult == 0 {
		return 1
	}
	return t.mult
}

// Key is the target's (id, port).
func (t *Target) Key() TargetKey { return t.cfg.Key() }

// Config is the target as it was registered (port filled in).
func (t *Target) Config() TargetConfig { return t.cfg }

// Dial is the address to connect to, "host:port".
func (t *Target) Dial() string { return t.dial }

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
