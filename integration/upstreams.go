// Package integration plugs target groups into Caddy's reverse_proxy: an
// upstream source, a selection policy and a `target_group` handler that
// wires both to one group.
package integration

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

func init() {
	caddy.RegisterModule(new(UpstreamSource))
}

// UpstreamSource is the `http.reverse_proxy.upstreams.target_group` module:
// reverse_proxy's dynamic upstreams are the routable targets of a group —
// healthy ones, or every checked one when the group fails open — read from
// an immutable snapshot without taking a lock.
type UpstreamSource struct {
	// The name of the target group.
	Group string `json:"group,omitempty"`

	reg *targetgroup.Registry
}

// CaddyModule returns the Caddy module information.
func (*UpstreamSource) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.upstreams.target_group",
		New: func() caddy.Module { return new(UpstreamSource) },
	}
}

// Provision loads the target_groups app, so that a config that only uses a
// group still runs the app that owns it.
func (u *UpstreamSource) Provision(ctx caddy.Context) error {
	reg, err := registryOf(ctx, u.Group)
	u.reg = reg
	return err
}

// Validate checks that a group is named.
func (u *UpstreamSource) Validate() error {
	if u.Group == "" {
		return errors.New("target_group upstreams: group is required")
	}
	return nil
}

// GetUpstreams returns fresh Upstream values on every call: reverse_proxy
// writes into them while provisioning each attempt.
func (u *UpstreamSource) GetUpstreams(r *http.Request) ([]*reverseproxy.Upstream, error) {
	g := u.reg.Group(u.Group)
	if g == nil {
		return nil, fmt.Errorf("target group %q does not exist", u.Group)
	}
	snap := g.Snapshot()
	if len(snap.Routable) == 0 {
		return nil, errors.New(snap.NoTargetReason(u.Group))
	}
	at := attemptOf(r)
	if at == nil {
		at = &attempt{}
		caddyhttp.SetVar(r.Context(), varAttempt, at)
	}
	at.source, at.snap = u.Group, snap
	n := len(snap.Routable)
	first := 0
	at.preselected = n > maxUpstreams
	if at.preselected {
		if first = preselect(r, u.reg, g, snap); first < 0 {
			first, at.preselected = 0, false
		} else {
			n = maxUpstreams
		}
	}
	// One allocation for the values, one for the pointers.
	vals := make([]reverseproxy.Upstream, n)
	ups := make([]*reverseproxy.Upstream, n)
	for k := range ups {
		vals[k].Dial = snap.Dial((first + k) % len(snap.Routable))
		ups[k] = &vals[k]
	}
	return ups, nil
}

// maxUpstreams bounds the upstreams handed to reverse_proxy per try: it
// provisions every one of them (under a process-wide lock) each time, so a
// larger group is narrowed here to the target the group's algorithm picks,
// followed by the next ones in order as fallbacks for the selection policy.
const maxUpstreams = 8

// UnmarshalCaddyfile sets up the source from Caddyfile tokens:
//
//	dynamic target_group <group>
func (u *UpstreamSource) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	group, err := groupArg(d)
	if err != nil {
		return err
	}
	u.Group = group
	if d.NextBlock(0) {
		return d.Errf("dynamic target_group: unrecognized option '%s'; the group's settings belong in the target_groups global option", d.Val())
	}
	return nil
}

// registryOf loads the target_groups app of the config being provisioned
// and records that a route uses the group, which the API then refuses to
// delete. A group the config does not declare may be created through the API.
func registryOf(ctx caddy.Context, group string) (*targetgroup.Registry, error) {
	appIface, err := ctx.App("target_groups")
	if err != nil {
		return nil, fmt.Errorf("loading target_groups app: %v", err)
	}
	app := appIface.(*targetgroup.App)
	if group != "" {
		app.Reference(group)
	}
	if group != "" && !app.Declares(group) {
		ctx.Logger().Warn("target group is not declared in the config; requests get 503 until it is created through the admin API", zap.String("group", group))
	}
	return app.Registry(), nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*UpstreamSource)(nil)
	_ caddy.Validator             = (*UpstreamSource)(nil)
	_ reverseproxy.UpstreamSource = (*UpstreamSource)(nil)
	_ caddyfile.Unmarshaler       = (*UpstreamSource)(nil)
)
