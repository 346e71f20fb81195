package integration

import (
	"net/http"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

func init() {
	caddy.RegisterModule(new(SelectionPolicy))
}

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
	app, err := appOf(ctx, p.Group)
	if err != nil {
		return err
	}
	p.reg = app.Registry()
	return nil
}

// Select picks a target among the available upstreams, with the group's
// Pick: the sticky target when the request names a healthy one, else one
// picked by the group's algorithm. A pool the target_group source narrowed
// (a large group) holds its pick among all the group's targets first, then
// fallbacks: the first acceptable one is taken. It never panics on an
// empty pool and tolerates a nil ResponseWriter (other policies call their
// fallback with one).
func (p *SelectionPolicy) Select(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	if len(pool) == 0 {
		return nil
	}
	at, g := attemptOf(r, p.reg, p.Group)
	if g == nil {
		return nil
	}
	snap := at.snap
	if snap == nil || g != at.group {
		snap = g.Snapshot() // the pool comes from elsewhere
	}
	among := mapPool(snap, pool)
	target := func(i int) *targetgroup.Target {
		if among == nil {
			return snap.Routable[i]
		}
		return among[i]
	}
	fresh := func(i int) bool {
		t := target(i)
		return t != nil && pool[i].Available() && !slices.Contains(at.tried, t)
	}
	now := time.Now()
	i := -1
	if snap == at.snap && snap.Narrowed(len(pool)) {
		i = selection.RoundRobin(len(pool), 0, fresh)
	}
	if i < 0 {
		i = snap.Pick(targetgroup.PickRequest{Among: among, OK: fresh, Pinned: at.pinnedTarget(r, p.reg.Keyring(), g, snap, now), Now: now})
	}
	if i < 0 && len(at.tried) > 0 {
		// Every target was tried already: a retry may still succeed on one.
		i = snap.Pick(targetgroup.PickRequest{Among: among, OK: func(i int) bool { return target(i) != nil && pool[i].Available() }, Now: now})
	}
	if i < 0 {
		return nil
	}
	t := target(i)
	at.begin(r, t, now)
	if st := snap.Stickiness(); st.Cookied() && w != nil {
		setCookies(w, st, p.reg.Keyring(), g.Name(), t, now)
	}
	return pool[i]
}

// mapPool maps the pool reverse_proxy hands to Select onto the snapshot's
// targets: nil when it is the snapshot's routable targets in order, as the
// target_group source builds it for all but large groups (then it costs
// nothing to map), else the target of each entry (nil for none).
func mapPool(snap *targetgroup.Snapshot, pool reverseproxy.UpstreamPool) []*targetgroup.Target {
	aligned := len(pool) == len(snap.Routable)
	for i := 0; aligned && i < len(pool); i++ {
		aligned = snap.Dial(i) == pool[i].Dial
	}
	if aligned {
		return nil
	}
	among := make([]*targetgroup.Target, len(pool))
	for i, u := range pool {
		among[i] = snap.ByDial(u.Dial)
	}
	return among
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
