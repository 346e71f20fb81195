package caddyfile

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("target_groups", parseTargetGroups)
}

// parseTargetGroups sets up the target_groups app from the global option of
// the same name. Several target_groups options merge; a group may be
// declared only once across them.
//
//	target_groups {
//		allowed_cidrs <cidr>...
//		zone <zone>
//		node_id <id>
//		sync_interval <duration>
//		per_target_metrics on|off
//		region <region>
//		account_id <id>
//		max_targets_per_group <n>
//		max_groups <n>
//		max_udp_flows_per_group <n>
//		lambda {
//			endpoint <url>
//			region <region>
//			max_concurrent_invocations <n>
//			timeout <duration>
//		}
//		<name> {
//			type ip|instance|alb|lambda
//			protocol HTTP|HTTPS|TCP|TLS|UDP|TCP_UDP
//			protocol_version HTTP1|HTTP2|GRPC
//			port <n>
//			ip_address_type ipv4|ipv6
//			vpc_id <vpc-id>
//			lambda_event_structure_version V1|V2
//			health_check off
//			health_check {
//				enabled true|false
//				protocol HTTP|HTTPS|TCP
//				protocol_version HTTP1|HTTP2|GRPC
//				port traffic-port|<n>
//				path <path>
//				interval <duration>
//				timeout <duration>
//				healthy_threshold <n>
//				unhealthy_threshold <n>
//				matcher [http|grpc] <codes>
//			}
//			deregistration_delay <duration>
//			algorithm round_robin|least_outstanding_requests|weighted_random
//			slow_start <duration>|off
//			stickiness lb_cookie [<duration>]
//			stickiness app_cookie <cookie_name> [<duration>]
//			stickiness source_ip|off
//			attribute <key> <value>
//			target <host>[:<port>] [zone <az>]
//			tag <key> <value>
//		}
//	}
//
// Groups are validated as soon as they are read, so that mistakes are
// reported with their file and line; allowed_cidrs must therefore come
// before the groups.
func parseTargetGroups(d *caddyfile.Dispenser, existingVal any) (any, error) {
	app := new(targetgroup.App)
	if existingVal != nil {
		prev, ok := existingVal.(httpcaddyfile.App)
		if !ok {
			return nil, d.Errf("existing target_groups value of unexpected type: %T", existingVal)
		}
		if err := json.Unmarshal(prev.Value, app); err != nil {
			return nil, d.Errf("merging with the earlier target_groups option: %v", err)
		}
	}
	if app.Groups == nil {
		app.Groups = make(map[string]*targetgroup.GroupConfig)
	}

	d.Next() // consume option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "allowed_cidrs":
			// Groups already read were checked against the old list, and
			// checking them again could only blame the wrong line.
			if len(app.Groups) > 0 {
				return nil, d.Err("allowed_cidrs must come before the target groups it applies to")
			}
			cidrs := d.RemainingArgs()
			if len(cidrs) == 0 {
				return nil, d.ArgErr()
			}
			if _, err := targetgroup.ParseCIDRs(cidrs); err != nil {
				return nil, d.WrapErr(err)
			}
			app.AllowedCIDRs = append(app.AllowedCIDRs, cidrs...)

		case "zone":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			if app.Zone != "" {
				return nil, d.Err("duplicate zone")
			}
			app.Zone = d.Val()
			if d.NextArg() {
				return nil, d.ArgErr()
			}

		case "node_id":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			if app.NodeID != "" {
				return nil, d.Err("duplicate node_id")
			}
			if err := targetgroup.ValidateNodeID(d.Val()); err != nil {
				return nil, d.WrapErr(err)
			}
			app.NodeID = d.Val()
			if d.NextArg() {
				return nil, d.ArgErr()
			}

		case "sync_interval":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			if app.SyncInterval != 0 {
				return nil, d.Err("duplicate sync_interval")
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur < 10*time.Millisecond || dur > time.Minute {
				return nil, d.Errf("sync_interval: %q must be a duration within 10ms-1m", d.Val())
			}
			app.SyncInterval = caddy.Duration(dur)
			if d.NextArg() {
				return nil, d.ArgErr()
			}

		case "region", "account_id":
			opt := d.Val()
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			field := &app.Region
			if opt == "account_id" {
				field = &app.AccountID
			}
			if *field != "" {
				return nil, d.Errf("duplicate %s", opt)
			}
			*field = d.Val()
			if d.NextArg() {
				return nil, d.ArgErr()
			}

		case "per_target_metrics":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			if app.PerTargetMetrics != nil {
				return nil, d.Err("duplicate per_target_metrics")
			}
			var on bool
			switch d.Val() {
			case "on":
				on = true
			case "off":
			default:
				return nil, d.Errf("per_target_metrics: %q must be on or off", d.Val())
			}
			app.PerTargetMetrics = &on
			if d.NextArg() {
				return nil, d.ArgErr()
			}

		case "max_targets_per_group", "max_groups", "max_udp_flows_per_group":
			opt := d.Val()
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 {
				return nil, d.Errf("%s: %q is not a positive number", opt, d.Val())
			}
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			switch opt {
			case "max_groups":
				app.MaxGroups = n
			case "max_udp_flows_per_group":
				app.MaxUDPFlowsPerGroup = n
			default:
				app.MaxTargetsPerGroup = n
			}

		case "lambda":
			if app.Lambda != nil {
				return nil, d.Err("duplicate lambda block")
			}
			lc, err := parseLambda(d)
			if err != nil {
				return nil, err
			}
			app.Lambda = lc

		default:
			name := d.Val()
			if _, dup := app.Groups[name]; dup {
				return nil, d.Errf("duplicate target group %q", name)
			}
			allowed, err := targetgroup.ParseCIDRs(app.AllowedCIDRs)
			if err != nil {
				return nil, d.WrapErr(err)
			}
			cfg, err := parseGroup(d, allowed)
			if err != nil {
				return nil, err
			}
			app.Groups[name] = cfg
		}
	}
	return httpcaddyfile.App{Name: "target_groups", Value: caddyconfig.JSON(app, nil)}, nil
}

// parseLambda reads the lambda block of the target_groups option.
func parseLambda(d *caddyfile.Dispenser) (*targetgroup.LambdaConfig, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	lc := new(targetgroup.LambdaConfig)
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return nil, d.Errf("lambda: duplicate %s", opt)
		}
		seen[opt] = true
		v, err := oneArg(d)
		if err != nil {
			return nil, err
		}
		switch opt {
		case "endpoint":
			lc.Endpoint = v
		case "region":
			lc.Region = v
		case "max_concurrent_invocations":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return nil, d.Errf("lambda: max_concurrent_invocations: %q must be 0 (no limit) or a positive number", v)
			}
			lc.MaxConcurrentInvocations = n
		case "timeout":
			dur, err := caddy.ParseDuration(v)
			if err != nil {
				return nil, d.Errf("lambda: timeout: %q is not a duration", v)
			}
			lc.Timeout = caddy.Duration(dur)
		default:
			return nil, d.Errf("lambda: unrecognized option '%s' (allowed: endpoint, region, max_concurrent_invocations, timeout)", opt)
		}
		if err := lc.Validate(); err != nil {
			return nil, d.WrapErr(err)
		}
	}
	return lc, nil
}
