package targetgroup

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App is the `target_groups` app: it owns every target group, their
// targets, health checks and drain timers, and keeps them across config
// reloads. Targets are registered and deregistered at run time through the
// admin API under `/target-groups/`, without a config reload.
type App struct {
	// The target groups, by name (3–128 characters: a-z, 0-9, hyphens).
	Groups map[string]*GroupConfig `json:"groups,omitempty"`

	// CIDR blocks that targets of type ip may be in. AWS forbids publicly
	// routable addresses; the default allows loopback, 10.0.0.0/8,
	// 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, ::1/128 and fc00::/7.
	// A list given here replaces the default.
	AllowedCIDRs []string `json:"allowed_cidrs,omitempty"`

	// The availability zone of this Caddy node. Targets carry zones too;
	// with load_balancing.cross_zone.enabled off, the node routes only to
	// targets of its own zone (and to targets of no zone or zone "all"), and
	// the target-group health thresholds apply to those. Empty: zones are
	// not used.
	Zone string `json:"zone,omitempty"`

	// Quotas, as AWS has them.
	Limits

	// Whether the metrics have series per target (requests, response
	// times, in flight, health checks, connections): at thousands of
	// targets they make /metrics large. Off keeps the group series
	// (targets per state, failover, bytes). Default true.
	PerTargetMetrics *bool `json:"per_target_metrics,omitempty"`

	// The id of this Caddy node among the nodes that share its storage (a
	// fleet): 1-128 letters, digits, '.', '_' or '-', unique in the fleet.
	// Default: the host name and the first characters of Caddy's instance
	// id (stored in Caddy's data directory, so it outlives restarts). A
	// change takes effect at the next start.
	NodeID string `json:"node_id,omitempty"`

	// The AWS region and account id the groups' ARNs name
	// (arn:aws:elasticloadbalancing:<region>:<account_id>:targetgroup/…).
	// Defaults: us-east-1 and 000000000000.
	Region    string `json:"region,omitempty"`
	AccountID string `json:"account_id,omitempty"`

	// How often this node reads the changes other nodes sharing its
	// storage made (10ms-1m, default 250ms). A change made through any
	// node's API is in force on every node within about this, plus the
	// storage's round trips.
	SyncInterval caddy.Duration `json:"sync_interval,omitempty"`

	// How the functions of lambda groups are invoked: endpoint, region,
	// max_concurrent_invocations, timeout (see LambdaConfig).
	Lambda *LambdaConfig `json:"lambda,omitempty"`

	specs   map[string]*Spec
	allowed []netip.Prefix
	ctx     caddy.Context
	logger  *zap.Logger
	reg     *Registry
	prev    *App
	limits  Limits
	nodeID  string
	// syncInterval is SyncInterval with its default.
	syncInterval time.Duration
	refs         map[string]int // groups used by routes of this config
	cleaned      atomic.Bool
	lambdaCfg    LambdaConfig
	lambda       LambdaInvoker
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "target_groups",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision validates every group and takes a reference to the live
// registry. It changes no live state: `caddy validate` provisions too.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	allowed, err := ParseCIDRs(a.AllowedCIDRs)
	if err != nil {
		return err
	}
	a.allowed = allowed
	if len(a.Zone) > 64 || strings.ContainsFunc(a.Zone, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return fieldErr("zone", "%q must be at most 64 printable ASCII characters", a.Zone)
	}
	a.limits = a.Limits.withDefaults()
	if err := a.limits.validate(); err != nil {
		return err
	}
	a.nodeID = a.NodeID
	if a.nodeID == "" {
		a.nodeID = defaultNodeID()
	} else if err := ValidateNodeID(a.nodeID); err != nil {
		return err
	}
	if a.Region == "" {
		a.Region = defaultRegion
	}
	if len(a.Region) > 32 || strings.ContainsFunc(a.Region, func(c rune) bool { return !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') }) {
		return fieldErr("region", "%q must be 1-32 characters: a-z, 0-9 or '-' (such as us-east-1)", a.Region)
	}
	if a.AccountID == "" {
		a.AccountID = defaultAccountID
	}
	if len(a.AccountID) != 12 || strings.ContainsFunc(a.AccountID, func(c rune) bool { return c < '0' || c > '9' }) {
		return fieldErr("account_id", "%q must be 12 digits", a.AccountID)
	}
	a.syncInterval = time.Duration(a.SyncInterval)
	if a.syncInterval == 0 {
		a.syncInterval = defaultSyncInterval
	}
	if a.syncInterval < 10*time.Millisecond || a.syncInterval > time.Minute {
		return fieldErr("sync_interval", "%s is outside 10ms-1m", a.syncInterval)
	}
	if err := a.provisionLambda(ctx); err != nil {
		return err
	}
	if len(a.Groups) > a.limits.MaxGroups {
		return fieldErr("groups", "%d groups exceed max_groups %d", len(a.Groups), a.limits.MaxGroups)
	}
	a.specs = make(map[string]*Spec, len(a.Groups))
	names := make([]string, 0, len(a.Groups))
	for name := range a.Groups {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := ValidateName(name); err != nil {
			return fmt.Errorf("target group %q: %w", name, err)
		}
		spec, err := NewSpec(a.Groups[name], allowed)
		if err == nil && len(spec.Config.Targets) > a.limits.MaxTargetsPerGroup {
			err = fieldErr("targets", "%d targets exceed max_targets_per_group %d", len(spec.Config.Targets), a.limits.MaxTargetsPerGroup)
		}
		if err != nil {
			return fmt.Errorf("target group %q: %w", name, err)
		}
		a.specs[name] = spec
	}
	// The events app is loaded with this one, so that the running config
	// has one to emit through (events.go).
	if _, err := ctx.App("events"); err != nil {
		return fmt.Errorf("loading events app: %v", err)
	}
	// Every load has a registry of its own; the collectors outlive them.
	if err := RegisterMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	logger := a.logger
	reg, _, err := registries.LoadOrNew(registryKey, func() (caddy.Destructor, error) {
		return newRegistry(logger), nil
	})
	if err != nil {
		return err
	}
	a.reg = reg.(*Registry)
	return nil
}

// Registry is the live registry this app works on.
func (a *App) Registry() *Registry { return a.reg }

// Declares reports whether the config declares the named group.
func (a *App) Declares(name string) bool {
	_, ok := a.specs[name]
	return ok
}

// Reference records that a route of this config uses the named group, so
// that the API refuses to delete it while this config runs.
func (a *App) Reference(name string) {
	if a.refs == nil {
		a.refs = make(map[string]int)
	}
	a.refs[name]++
}

// DeclaredSpec returns the validated spec of a group the config declares, or nil.
func (a *App) DeclaredSpec(name string) *Spec { return a.specs[name] }

// Start puts this config's groups in force and starts health checks.
func (a *App) Start() error {
	a.prev = a.reg.applied
	if a.reg.apply(a) {
		// The first start reads what the fleet stored (registrations come
		// back after a restart) and starts following it.
		a.reg.firstSync()
		a.reg.runSync()
		return nil
	}
	// A config may declare a group the fleet has registrations for, or
	// stop declaring one the fleet created through the API.
	a.reg.applyGroups(a.reg.fleet.groupNames())
	return nil
}

// Stop gives the registry back to the previous config when this one is
// rolled back (another app failed to start); on a normal reload the new
// config is already in force and Stop changes nothing.
func (a *App) Stop() error {
	a.reg.mu.Lock()
	applied := a.reg.applied
	a.reg.mu.Unlock()
	if applied == a && a.prev != nil && !a.prev.cleaned.Load() {
		a.reg.apply(a.prev)
	}
	return nil
}

// Cleanup releases the reference to the registry.
func (a *App) Cleanup() error {
	a.cleaned.Store(true)
	if c, ok := a.lambda.(interface{ Close() }); ok {
		c.Close()
	}
	if a.reg != nil {
		_, err := registries.Delete(registryKey)
		return err
	}
	return nil
}

// Limits are the quotas of the app. Exceeding one is refused with
// ServiceQuotaExceededException and changes nothing.
type Limits struct {
	// Targets registered in one group, draining ones included: they hold
	// memory and timers until their delay ends. Default 1000, as AWS.
	MaxTargetsPerGroup int `json:"max_targets_per_group,omitempty"`
	// Target groups, config and API together. Default 3000, as AWS.
	MaxGroups int `json:"max_groups,omitempty"`
	// Live UDP flows of one group, across every layer4 server that routes
	// to it: a new flow beyond it closes the group's least recently active
	// flow (whose client starts a new one if it sends again). Each flow
	// holds a socket to its target until the layer4 server's idle_timeout,
	// and a client gets a new flow with every source port it sends from.
	// 1-1000000, default 10000.
	MaxUDPFlowsPerGroup int `json:"max_udp_flows_per_group,omitempty"`
}

func (l Limits) withDefaults() Limits {
	if l.MaxTargetsPerGroup == 0 {
		l.MaxTargetsPerGroup = 1000
	}
	if l.MaxGroups == 0 {
		l.MaxGroups = 3000
	}
	if l.MaxUDPFlowsPerGroup == 0 {
		l.MaxUDPFlowsPerGroup = 10000
	}
	return l
}

func (l Limits) validate() error {
	switch {
	case l.MaxTargetsPerGroup < 1 || l.MaxTargetsPerGroup > maxTargetsPerGroup:
		return fieldErr("max_targets_per_group", "%d is outside 1-%d", l.MaxTargetsPerGroup, maxTargetsPerGroup)
	case l.MaxGroups < 1 || l.MaxGroups > 100000:
		return fieldErr("max_groups", "%d is outside 1-100000", l.MaxGroups)
	case l.MaxUDPFlowsPerGroup < 1 || l.MaxUDPFlowsPerGroup > 1000000:
		return fieldErr("max_udp_flows_per_group", "%d is outside 1-1000000", l.MaxUDPFlowsPerGroup)
	}
	return nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
