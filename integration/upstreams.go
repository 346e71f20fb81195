package integration

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
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
	app, err := appOf(ctx, u.Group)
	if err != nil {
		return err
	}
	u.reg = app.Registry()
	if spec := app.DeclaredSpec(u.Group); spec != nil && spec.Config.Type == targetgroup.TypeLambda {
		return errLambdaUpstreams(u.Group)
	}
	return nil
}

// errLambdaUpstreams refuses a lambda group as reverse_proxy upstreams:
// functions have no address to proxy to.
func errLambdaUpstreams(group string) error {
	return fmt.Errorf("target_group upstreams: group %q is of type lambda, whose function reverse_proxy cannot invoke; route to it with the target_group handler (Caddyfile: target_group %s)", group, group)
}

// Validate checks that a group is named.
func (u *UpstreamSource) Validate() error {
	if u.Group == "" {
		return errors.New("target_group upstreams: group is required")
	}
	return nil
}

// GetUpstreams returns fresh Upstream values on every call: reverse_proxy
// writes into them while provisioning each attempt. A large group is
// narrowed to the target its Pick chooses, followed by the next ones as
// fallbacks (Snapshot.Narrow).
func (u *UpstreamSource) GetUpstreams(r *http.Request) ([]*reverseproxy.Upstream, error) {
	at, g := attemptOf(r, u.reg, u.Group)
	if g == nil {
		return nil, fmt.Errorf("target group %q does not exist", u.Group)
	}
	snap := g.Snapshot()
	if g == at.group {
		at.snap = snap
	}
	if snap.Spec.Config.Type == targetgroup.TypeLambda {
		return nil, errLambdaUpstreams(u.Group)
	}
	if len(snap.Routable) == 0 {
		return nil, errors.New(snap.NoTargetReason(u.Group))
	}
	req := targetgroup.PickRequest{OK: func(i int) bool { return !slices.Contains(at.tried, snap.Routable[i]) }}
	if snap.Stickiness().Cookied() {
		req.Now = time.Now()
		req.Pinned = at.pinnedTarget(r, u.reg.Keyring(), g, snap, req.Now)
	}
	first, n := snap.Narrow(maxUpstreams, req)
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
// provisions every one of them (under a process-wide lock) each time.
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

// appOf loads the target_groups app of the config being provisioned and
// records that a route uses the group, which the API then refuses to
// delete. A group the config does not declare may be created through the API.
func appOf(ctx caddy.Context, group string) (*targetgroup.App, error) {
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
	return app, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*UpstreamSource)(nil)
	_ caddy.Validator             = (*UpstreamSource)(nil)
	_ reverseproxy.UpstreamSource = (*UpstreamSource)(nil)
	_ caddyfile.Unmarshaler       = (*UpstreamSource)(nil)
)
