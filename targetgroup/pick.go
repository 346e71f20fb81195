package targetgroup

import (
	"hash/maphash"
	"time"

	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
)

// Picking a target is one function, Snapshot.Pick, for HTTP requests and
// layer 4 connections alike: stickiness first, then the group's algorithm
// with slow start, over the snapshot's routable targets (which fail-open
// has already widened). The algorithms themselves are package selection's;
// what a request carries (a cookie, a client address) is read by the
// caller and handed over decoded.

// Stickiness types (stickiness.type).
const (
	StickinessLBCookie  = "lb_cookie"
	StickinessAppCookie = "app_cookie"
	StickinessSourceIP  = "source_ip"
)

// appCookieLB is the load balancer cookie ALB sets beside an application
// cookie (AWSALBAPP-0 … -3; one suffices for our cookie's size).
const appCookieLB = "AWSALBAPP-0"

// Stickiness is a group's stickiness as the request path applies it. The
// zero value (Type "") is no stickiness.
type Stickiness struct {
	// Type is StickinessLBCookie, StickinessAppCookie or StickinessSourceIP.
	Type string
	// Cookie is the load balancer's cookie (lb_cookie and app_cookie).
	Cookie string
	// CORS: a SameSite=None twin of the cookie, <Cookie>CORS, goes with it
	// (lb_cookie).
	CORS bool
	// AppCookie is the application's cookie (app_cookie): stickiness lasts
	// as long as the client sends it.
	AppCookie string
	// Duration is how long a pick sticks, refreshed on every response.
	Duration time.Duration
}

// Cookied reports whether the stickiness is carried by a cookie.
func (s Stickiness) Cookied() bool {
	return s.Type == StickinessLBCookie || s.Type == StickinessAppCookie
}

func stickinessOf(a Attributes) Stickiness {
	if !a.StickinessEnabled {
		return Stickiness{}
	}
	switch a.StickinessType {
	case StickinessLBCookie:
		return Stickiness{Type: StickinessLBCookie, Cookie: a.LBCookieName, CORS: true, Duration: a.LBCookieDuration}
	case StickinessAppCookie:
		return Stickiness{Type: StickinessAppCookie, Cookie: appCookieLB, AppCookie: a.AppCookieName, Duration: a.AppCookieDuration}
	case StickinessSourceIP:
		return Stickiness{Type: StickinessSourceIP}
	}
	return Stickiness{}
}

// sourceIPSeed keys source_ip stickiness. It lives as long as the process,
// so that clients keep their target across config reloads.
var sourceIPSeed = maphash.MakeSeed()

// PickRequest is what a pick knows of the request or connection it is for.
type PickRequest struct {
	// Among are the candidates when they are not the snapshot's routable
	// targets in order (a reverse_proxy pool that is not the snapshot's):
	// targets of the snapshot, nil for an entry that is none (never
	// picked). Nil: the routable targets.
	Among []*Target
	// OK tells whether candidate i may be picked (not tried yet, available
	// to the caller); nil accepts every one.
	OK func(i int) bool
	// Pinned is the target a sticky cookie names, as the caller decoded
	// it; the zero key names none. It is picked while it is healthy (not
	// merely routed to by fail-open) and acceptable.
	Pinned TargetKey
	// ClientIP is the client's address, for source_ip stickiness.
	ClientIP string
	// Now is when the request started, for slow start; zero: now.
	Now time.Time
}

// Pick returns the candidate a new request or connection goes to, an index
// in req.Among or, without it, in Routable; -1 when none is acceptable.
// The sticky target comes first: the cookie's pinned one, or with
// source_ip the client address's (rendezvous hashing: when targets come or
// go, only the clients of those targets move). Otherwise the group's
// algorithm picks: round robin from the group's shared cursor, least
// outstanding requests (ties take turns by the cursor) or weighted random;
// targets in slow start are kept with their ramped share.
func (s *Snapshot) Pick(req PickRequest) int {
	p := picker{s: s, req: &req, targets: s.Routable, ok: req.OK}
	if req.Among != nil {
		p.targets = req.Among
		p.ok = func(i int) bool { return req.Among[i] != nil && (req.OK == nil || req.OK(i)) }
	} else if p.ok == nil {
		p.ok = func(int) bool { return true }
	}
	switch {
	case s.stick.Cookied() && req.Pinned != (TargetKey{}):
		if i := p.pinned(); i >= 0 {
			return i
		}
	case s.stick.Type == StickinessSourceIP:
		return selection.Rendezvous(sourceIPSeed, req.ClientIP, len(p.targets), func(i int) string { return p.targets[i].Dial() }, p.ok)
	}
	return p.balance()
}

// Narrow is Pick for a caller that can hand at most max candidates on
// (reverse_proxy provisions every upstream it is given, under a
// process-wide lock). With at most max routable targets, it hands on all
// of them, in order, and picks nothing: the caller picks among them. With
// more, it picks among all of them (so that the spread, least outstanding
// requests and stickiness cover the whole group) and hands on the pick
// followed by the next targets in order, as fallbacks: the first
// acceptable of them is the pick. The candidates are Routable[(first+k) %
// len(Routable)] for k < n.
func (s *Snapshot) Narrow(max int, req PickRequest) (first, n int) {
	n = len(s.Routable)
	if n <= max {
		return 0, n
	}
	if first = s.Pick(req); first < 0 {
		first = 0
	}
	return first, max
}

// Narrowed reports whether n candidates of this snapshot are fewer than its
// routable targets, as those Narrow hands on from a large group are.
func (s *Snapshot) Narrowed(n int) bool { return n < len(s.Routable) }

// picker is one Pick's view of its candidates.
type picker struct {
	s       *Snapshot
	req     *PickRequest
	targets []*Target // Routable, or req.Among
	ok      func(i int) bool
}

// pinned is the candidate holding the target the request's cookie names,
// or -1 when it is not a healthy, acceptable candidate.
func (p *picker) pinned() int {
	si := p.s.Index(p.req.Pinned)
	if !p.s.IsHealthy(si) {
		return -1
	}
	i := si
	if p.req.Among != nil {
		i = -1
		for k, t := range p.req.Among {
			if t == p.s.Routable[si] {
				i = k
				break
			}
		}
	}
	if i >= 0 && p.ok(i) {
		return i
	}
	return -1
}

// balance applies the group's algorithm.
func (p *picker) balance() int {
	s, n, ts := p.s, len(p.targets), p.targets
	next := func() uint64 { return s.cursor.Add(1) - 1 }
	switch s.Spec.Attributes.Algorithm {
	case AlgorithmLeastOutstandingRequests:
		return selection.LeastOutstanding(n, next(), func(i int) int64 { return ts[i].InFlight() }, p.ok)
	case AlgorithmWeightedRandom:
		if s.weights == nil || p.req.Among != nil {
			// The weights are the routable targets'; other candidates are
			// equal.
			return selection.RoundRobin(n, uint64(selection.Uniform()*float64(n)), p.ok)
		}
		draw := func() int { return s.weights.Pick(selection.Uniform(), p.ok) }
		if !s.anySlowStart {
			return draw()
		}
		return selection.Ramp(draw, p.rampFactor, selection.Uniform)
	default:
		if !s.anySlowStart {
			return selection.RoundRobin(n, next(), p.ok)
		}
		return selection.RoundRobinRamp(n, next, p.rampFactor, p.ok, selection.Uniform)
	}
}

// rampFactor is the slow start share of candidate i.
func (p *picker) rampFactor(i int) float64 {
	t := p.targets[i]
	if t == nil {
		return 1
	}
	si := i
	if p.req.Among != nil {
		si = p.s.Index(t.Key())
	}
	if p.req.Now.IsZero() {
		p.req.Now = time.Now()
	}
	if since, in := p.s.SlowStartSince(si, p.req.Now); in {
		return selection.SlowStartFactor(p.req.Now, since, p.s.slowStart)
	}
	return 1
}
