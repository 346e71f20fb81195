package caddyfile

import (
	"errors"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// parseHealthCheck reads the health check of a group:
//
//	health_check off
//	health_check {
//		<option> <value>
//		...
//	}
func (p *groupParser) parseHealthCheck(d *caddyfile.Dispenser) error {
	if err := p.once(d, "health_check", "health_check"); err != nil {
		return err
	}
	hc := new(targetgroup.HealthCheckConfig)
	p.cfg.HealthCheck = hc
	if d.NextArg() {
		if !strings.EqualFold(d.Val(), "off") {
			return d.Errf("health_check: unexpected '%s'; expected 'off' or a block", d.Val())
		}
		if d.NextArg() {
			return d.ArgErr()
		}
		p.at["health_check.enabled"] = p.cur
		disabled := false
		hc.Enabled = &disabled
		if d.NextBlock(d.Nesting()) {
			return errAt(p.cur, errors.New("health_check off takes no block"))
		}
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		p.cur = d.Token()
		if err := p.once(d, "health_check."+opt, "health_check "+opt); err != nil {
			return err
		}
		if err := parseHealthCheckOption(d, hc); err != nil {
			return err
		}
	}
	return nil
}

// parseHealthCheckOption reads one line of a health_check block:
//
//	enabled true|false
//	protocol HTTP|HTTPS|TCP
//	protocol_version HTTP1|HTTP2|GRPC
//	port traffic-port|<n>
//	path <path>
//	interval <duration>
//	timeout <duration>
//	healthy_threshold <n>
//	unhealthy_threshold <n>
//	matcher [http|grpc] <codes>
func parseHealthCheckOption(d *caddyfile.Dispenser, hc *targetgroup.HealthCheckConfig) error {
	var err error
	switch opt := d.Val(); opt {
	case "matcher":
		return parseMatcher(d, hc)
	case "healthy_threshold":
		hc.HealthyThreshold, err = intArg(d, opt)
	case "unhealthy_threshold":
		hc.UnhealthyThreshold, err = intArg(d, opt)
	case "interval":
		hc.Interval, err = durationArg(d, opt)
	case "timeout":
		hc.Timeout, err = durationArg(d, opt)
	case "enabled", "protocol", "protocol_version", "port", "path":
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		switch opt {
		case "enabled":
			var on bool
			switch {
			case strings.EqualFold(v, "true"):
				on = true
			case strings.EqualFold(v, "false"):
			default:
				return d.Errf("enabled: '%s' must be true or false", v)
			}
			hc.Enabled = &on
		case "protocol":
			hc.Protocol = strings.ToUpper(v)
		case "protocol_version":
			hc.ProtocolVersion = strings.ToUpper(v)
		case "port":
			port, err := targetgroup.ParseHealthCheckPort(strings.ToLower(v))
			if err != nil {
				return d.WrapErr(err)
			}
			hc.Port = port
		case "path":
			hc.Path = v
		}
	default:
		return d.Errf("unrecognized health_check option '%s'", opt)
	}
	return err
}

// parseMatcher reads the success codes of a health check; one argument
// is HTTP codes:
//
//	matcher [http|grpc] <codes>
func parseMatcher(d *caddyfile.Dispenser, hc *targetgroup.HealthCheckConfig) error {
	args := d.RemainingArgs()
	switch {
	case len(args) == 1:
		hc.Matcher = &targetgroup.MatcherConfig{HTTPCode: args[0]}
	case len(args) == 2 && strings.EqualFold(args[0], "http"):
		hc.Matcher = &targetgroup.MatcherConfig{HTTPCode: args[1]}
	case len(args) == 2 && strings.EqualFold(args[0], "grpc"):
		hc.Matcher = &targetgroup.MatcherConfig{GRPCCode: args[1]}
	case len(args) == 2:
		return d.Errf("matcher: unknown kind '%s'; expected http or grpc", args[0])
	default:
		return d.ArgErr()
	}
	return nil
}
