package integration

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// varAttempt holds the request's *attempt, the one request variable the
// handler, the source and the policy share.
const varAttempt = "target_group.attempt"

// attempt is the state of one request across the tries reverse_proxy
// makes: reverse_proxy asks the upstream source and then the selection
// policy once per try, as two modules that know nothing of each other, and
// this is what they share. The group is looked up once, by the first of
// them the request reaches; each try has its snapshot; the lease of the
// current try ends when the next try begins, or when the request does.
type attempt struct {
	// Request goroutine only.
	group *targetgroup.Group
	// snap is the snapshot the source built this try's pool from.
	snap  *targetgroup.Snapshot
	tried []*targetgroup.Target
	// pinned is the target the request's sticky cookie names, read once.
	pinned     targetgroup.TargetKey
	pinnedRead bool
	// owned: the target_group handler ends the attempt as its proxy
	// returns (the response, or upgraded connection, is done by then);
	// under Caddy's own reverse_proxy the request context's end does.
	owned bool

	// Shared with the request's end, which runs on its own goroutine.
	lease   atomic.Pointer[targetgroup.Lease] // the current try's target
	start   atomic.Int64                      // when the current try began (UnixNano)
	dialErr atomic.Pointer[string]            // the last try could not reach its target
	done    atomic.Bool
}

// attemptOf returns the request's attempt and its group name, creating the
// attempt (and looking the group up) when the request has none yet; the
// group is nil when it does not exist. A request whose attempt is on
// another group (a policy and a source configured with different groups)
// gets that group looked up for this call only.
func attemptOf(r *http.Request, reg *targetgroup.Registry, name string) (*attempt, *targetgroup.Group) {
	at, _ := caddyhttp.GetVar(r.Context(), varAttempt).(*attempt)
	if at != nil && at.group != nil && (name == "" || at.group.Name() == name) {
		return at, at.group
	}
	var g *targetgroup.Group
	if name != "" {
		g = reg.Group(name)
	}
	if at == nil {
		at = newAttempt(r, g)
	} else if at.group == nil {
		at.group = g
	}
	return at, g
}

// newAttempt starts the attempt of a request on g.
func newAttempt(r *http.Request, g *targetgroup.Group) *attempt {
	at := &attempt{group: g}
	caddyhttp.SetVar(r.Context(), varAttempt, at)
	return at
}

// pinnedTarget is the target of g that the request's sticky cookie names
// (the zero key: none), decoded on the first try and kept for the others.
func (at *attempt) pinnedTarget(r *http.Request, kr *selection.Keyring, g *targetgroup.Group, snap *targetgroup.Snapshot, now time.Time) targetgroup.TargetKey {
	if g != at.group {
		return pinnedKey(r, snap.Stickiness(), kr, g.Name(), now)
	}
	if !at.pinnedRead {
		at.pinned, at.pinnedRead = pinnedKey(r, snap.Stickiness(), kr, g.Name(), now), true
	}
	return at.pinned
}

// begin starts a try on t: the previous try, which failed since
// reverse_proxy tries again, ends; unless the handler owns the attempt, the
// first one hooks the request's end.
func (at *attempt) begin(r *http.Request, t *targetgroup.Target, now time.Time) {
	if len(at.tried) == 0 && !at.owned {
		// The request's context ends when the server is done with the
		// request, response body and upgraded connections included. A hook
		// costs a goroutine at the end of every request, which the handler
		// saves by calling end itself.
		context.AfterFunc(r.Context(), func() { at.end(r) })
	} else if l := at.lease.Load(); l != nil {
		l.End(at.elapsed(), 0, true, "the request failed and was retried on another target")
	}
	at.tried = append(at.tried, t)
	at.start.Store(now.UnixNano())
	at.lease.Store(t.Acquire())
	if at.done.Load() {
		// The request ended while this try was being set up.
		at.lease.Load().Release()
	}
}

// dialFailed records that the last try could not reach its target, what
// the target_group handler's proxy returned: reverse_proxy leaves no
// status then.
func (at *attempt) dialFailed(err error) {
	if dialErr := (reverseproxy.DialError{}); errors.As(err, &dialErr) {
		desc := dialErr.Error()
		at.dialErr.Store(&desc)
	}
}

// end reports the last try's outcome to passive health and anomaly
// detection and ends its lease, once the request is over. It is the one
// way a lease ends; only its first call counts.
func (at *attempt) end(r *http.Request) {
	if !at.done.CompareAndSwap(false, true) {
		return
	}
	l := at.lease.Load()
	if l == nil {
		return
	}
	if desc := at.dialErr.Load(); desc != nil {
		l.End(at.elapsed(), 0, true, *desc)
		return
	}
	code, failed, desc := upstreamStatus(r)
	l.End(at.elapsed(), code, failed, desc)
}

func (at *attempt) elapsed() time.Duration {
	return time.Duration(time.Now().UnixNano() - at.start.Load())
}

// upstreamStatus reads the status the target answered (0: none), which
// reverse_proxy leaves in the replacer; 502, 503 and 504 count as failures.
func upstreamStatus(r *http.Request) (code int, failed bool, desc string) {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return 0, false, ""
	}
	v, _ := repl.Get("http.reverse_proxy.status_code")
	code, _ = v.(int)
	switch code {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return code, true, "the target answered " + strconv.Itoa(code)
	}
	return code, false, ""
}
