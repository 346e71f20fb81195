package integration

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

func init() {
	caddy.RegisterModule(new(SelectionPolicy))
}

// varAttempt holds the request's *attempt, the one request variable the
// source, the policy and the handler share.
const varAttempt = "target_group.attempt"

// SelectionPolicy is the `http.reverse_proxy.selection_policies.target_group`
// module: it picks a target with the group's algorithm
// (load_balancing.algorithm.type) and counts the request against it until
// the request ends, which is what least-outstanding-requests and draining
// read.
type SelectionPolicy struct {
	// The target group. Optional with the target_group upstream source,
	// whose group is used by default.
	Group string `json:"group,omitempty"`

	reg *targetgroup.Registry
}

// CaddyModule returns the Caddy module information.
func (*SelectionPolicy) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.target_group",
		New: func() caddy.Module { return new(SelectionPolicy) },
	}
}

// Provision loads the target_groups app.
func (p *SelectionPolicy) Provision(ctx caddy.Context) error {
	reg, err := registryOf(ctx, p.Group)
	p.reg = reg
	return err
}

// attempt is the state of one request across the tries reverse_proxy makes:
// what the source handed over, the lease on the target the current try
// uses and the targets earlier tries used.
type attempt struct {
	// Set by the source on every try; request goroutine only.
	source      string                // the group the upstreams came from
	snap        *targetgroup.Snapshot // the snapshot they were built from
	preselected bool                  // the algorithm's pick is first in the pool

	// owned: the target_group handler ends the attempt when the proxy
	// returns; otherwise the request context's end does.
	owned bool
	group *targetgroup.Group // set by the first try
	tried []*targetgroup.Target

	lease atomic.Pointer[targetgroup.Lease] // the current try's target
	start atomic.Int64                      // when the current try began (UnixNano)
	stop  atomic.Pointer[func() bool]       // unregisters the context hook once finished
	done  atomic.Bool
}

func attemptOf(r *http.Request) *attempt {
	at, _ := caddyhttp.GetVar(r.Context(), varAttempt).(*attempt)
	return at
}

// retry ends the current try, which failed since reverse_proxy tries again.
func (at *attempt) retry() {
	if l := at.lease.Load(); l != nil {
		at.group.ObserveRequest(l.Target(), at.elapsed(), true)
		at.group.ReportProxyResult(l.Target(), true, "the request failed and was retried on another target")
		l.Release()
	}
}

// finish reports the last try's outcome to passive health and ends its
// lease. Only the first call counts: the handler calls it as soon as the
// proxy returns, the request context's end calls it in any case.
func (at *attempt) finish(failed bool, desc string) {
	if !at.done.CompareAndSwap(false, true) {
		return
	}
	if stop := at.stop.Load(); stop != nil {
		(*stop)() // no goroutine at the context's end: there is nothing left to do
	}
	if l := at.lease.Load(); l != nil {
		at.group.ObserveRequest(l.Target(), at.elapsed(), failed)
		at.group.ReportProxyResult(l.Target(), failed, desc)
		l.Release()
	}
}

func (at *attempt) elapsed() time.Duration {
	return time.Duration(time.Now().UnixNano() - at.start.Load())
}

// upstreamStatus reads the status the target answered, which reverse_proxy
// leaves in the replacer; 502, 503 and 504 count as failures.
func upstreamStatus(r *http.Request) (failed bool, desc string) {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return false, ""
	}
	code, _ := repl.Get("http.reverse_proxy.status_code")
	switch c, _ := code.(int); c {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true, "the target answered " + strconv.Itoa(c)
	}
	return false, ""
}

// Select picks a target among the available upstreams: the sticky target
// when the request names a healthy one, else one picked by the group's
// algorithm. It never panics on an empty pool and tolerates a nil
// ResponseWriter (other policies call their fallback with one).
func (p *SelectionPolicy) Select(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	if len(pool) == 0 {
		return nil
	}
	at := attemptOf(r)
	if at == nil {
		at = &attempt{}
		caddyhttp.SetVar(r.Context(), varAttempt, at)
	}
	name := p.Group
	if name == "" {
		name = at.source
	}
	g := p.reg.Group(name)
	if g == nil {
		return nil
	}
	snap := at.snap
	if snap == nil || at.source != name {
		snap = g.Snapshot()
	}
	v := newView(snap, pool)
	fresh := func(i int) bool {
		t := v.target(i)
		return t != nil && pool[i].Available() && !slices.Contains(at.tried, t)
	}
	now := time.Now()
	stick := stickinessOf(snap.Spec)
	i := -1
	if at.preselected && at.source == name {
		// The source picked already and put its pick first.
		i = selection.RoundRobin(v.n, 0, fresh)
	}
	if i < 0 && stick != nil {
		i = stick.pinned(r, p.reg.Keyring(), g.Name(), v, fresh, now)
	}
	if i < 0 {
		i = pick(v, g, fresh, now)
	}
	if i < 0 && len(at.tried) > 0 {
		// Every target was tried already: a retry may still succeed on one.
		i = pick(v, g, func(i int) bool { return v.target(i) != nil && pool[i].Available() }, now)
	}
	if i < 0 {
		return nil
	}
	t := v.target(i)
	if at.group == nil {
		at.group = g
		if !at.owned {
			// The request's context ends when the server is done with the
			// request, response body and upgraded connections included.
			stop := context.AfterFunc(r.Context(), func() { at.finish(upstreamStatus(r)) })
			at.stop.Store(&stop)
		}
	} else {
		at.retry()
	}
	at.tried = append(at.tried, t)
	at.start.Store(now.UnixNano())
	at.lease.Store(t.Acquire())
	if stick != nil && w != nil {
		stick.setCookies(w, p.reg.Keyring(), g.Name(), t, now)
	}
	return pool[i]
}

// view maps the pool reverse_proxy hands to Select onto the snapshot's
// targets. The pool is normally built from this very snapshot, in order,
// and then costs nothing to map.
type view struct {
	snap    *targetgroup.Snapshot
	n       int
	aligned bool
	targets []*targetgroup.Target // only when not aligned
}

func newView(snap *targetgroup.Snapshot, pool reverseproxy.UpstreamPool) view {
	v := view{snap: snap, n: len(pool), aligned: len(pool) == len(snap.Routable)}
	for i := 0; v.aligned && i < len(pool); i++ {
		v.aligned = snap.Dial(i) == pool[i].Dial
	}
	if !v.aligned {
		v.targets = make([]*targetgroup.Target, len(pool))
		for i, u := range pool {
			v.targets[i] = snap.ByDial(u.Dial)
		}
	}
	return v
}

func (v view) target(i int) *targetgroup.Target {
	if v.aligned {
		return v.snap.Routable[i]
	}
	return v.targets[i]
}

// poolIndex is the pool position of routable target si, or -1.
func (v view) poolIndex(si int) int {
	if si < 0 || v.aligned {
		return si
	}
	want := v.snap.Routable[si]
	for i, t := range v.targets {
		if t == want {
			return i
		}
	}
	return -1
}

// rampFactor is the slow start share of pool candidate i at now.
func (v view) rampFactor(i int, now time.Time) float64 {
	t := v.target(i)
	if t == nil {
		return 1
	}
	si := v.snap.Index(t.Key())
	if since, in := v.snap.SlowStartSince(si, now); in {
		return selection.SlowStartFactor(now, since, v.snap.SlowStart)
	}
	return 1
}

// preselect applies stickiness and the group's algorithm to every routable
// target of snap, for a source that hands reverse_proxy only a few of them.
// It returns an index in snap.Routable, or -1.
func preselect(r *http.Request, reg *targetgroup.Registry, g *targetgroup.Group, snap *targetgroup.Snapshot) int {
	at := attemptOf(r)
	ok := func(i int) bool { return at == nil || !slices.Contains(at.tried, snap.Routable[i]) }
	v := view{snap: snap, n: len(snap.Routable), aligned: true}
	now := time.Now()
	if stick := stickinessOf(snap.Spec); stick != nil {
		if i := stick.pinned(r, reg.Keyring(), g.Name(), v, ok, now); i >= 0 {
			return i
		}
	}
	return pick(v, g, ok, now)
}

// pickRoutable applies the group's algorithm to the snapshot's routable
// targets themselves (layer 4 picks from them without a pool).
func pickRoutable(snap *targetgroup.Snapshot, g *targetgroup.Group, ok func(int) bool) int {
	return pick(view{snap: snap, n: len(snap.Routable), aligned: true}, g, ok, time.Now())
}

// pick applies the group's algorithm to the acceptable candidates.
func pick(v view, g *targetgroup.Group, ok func(int) bool, now time.Time) int {
	next := func() uint64 { return g.RR.Add(1) - 1 }
	switch v.snap.Spec.Attributes.Algorithm {
	case targetgroup.AlgorithmLeastOutstandingRequests:
		return selection.LeastOutstanding(v.n, next(), func(i int) int64 { return v.target(i).InFlight() }, ok)
	case targetgroup.AlgorithmWeightedRandom:
		if v.snap.Weights == nil || !v.aligned {
			return selection.RoundRobin(v.n, uint64(selection.Uniform()*float64(v.n)), ok)
		}
		// Slow start by rejection, as RoundRobinRamp does, with as few draws.
		last := -1
		for range min(v.n, 16) {
			i := v.snap.Weights.Pick(selection.Uniform(), ok)
			if i < 0 || !v.snap.AnySlowStart || selection.AcceptRR(v.rampFactor(i, now), selection.Uniform()) {
				return i
			}
			last = i
		}
		return last
	default:
		if !v.snap.AnySlowStart {
			return selection.RoundRobin(v.n, next(), ok)
		}
		return selection.RoundRobinRamp(v.n, next, func(i int) float64 { return v.rampFactor(i, now) }, ok, selection.Uniform)
	}
}

// end ends the last try as soon as the proxy returns, ahead of the
// request context's end; err is what the proxy returned.
func (at *attempt) end(r *http.Request, err error) {
	if at.group == nil {
		return // no try was made
	}
	if err != nil {
		if dialErr := (reverseproxy.DialError{}); errors.As(err, &dialErr) {
			at.finish(true, dialErr.Error())
			return
		}
	}
	at.finish(upstreamStatus(r))
}

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens:
//
//	lb_policy target_group [<group>]
func (p *SelectionPolicy) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the policy name
	if d.NextArg() {
		p.Group = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("lb_policy target_group: unrecognized option '%s'; the algorithm is the group's load_balancing.algorithm.type attribute", d.Val())
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*SelectionPolicy)(nil)
	_ reverseproxy.Selector = (*SelectionPolicy)(nil)
	_ caddyfile.Unmarshaler = (*SelectionPolicy)(nil)
)
