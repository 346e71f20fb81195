package caddyfile

import (
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// parseAttribute reads an option that sets attributes: `attribute` sets one
// by its AWS key, the others are shorthands:
//
//	deregistration_delay <duration>
//	algorithm round_robin|least_outstanding_requests|weighted_random
//	slow_start <duration>|off
//	stickiness ...
//	attribute <key> <value>
func (p *groupParser) parseAttribute(d *caddyfile.Dispenser, opt string) error {
	switch opt {
	case "deregistration_delay":
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		secs, err := wholeSeconds(d, opt, v)
		if err != nil {
			return err
		}
		return p.setAttr(d, targetgroup.AttrDeregistrationDelay, secs)

	case "algorithm":
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		return p.setAttr(d, targetgroup.AttrAlgorithm, strings.ToLower(v))

	case "slow_start":
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		secs := "0" // AWS's value for "disabled"
		if !strings.EqualFold(v, "off") {
			if secs, err = wholeSeconds(d, opt, v); err != nil {
				return err
			}
		}
		return p.setAttr(d, targetgroup.AttrSlowStart, secs)

	case "stickiness":
		return p.parseStickiness(d)

	default: // attribute
		args := d.RemainingArgs()
		if len(args) != 2 {
			return d.ArgErr()
		}
		return p.setAttr(d, args[0], args[1])
	}
}

// setAttr sets an attribute once, whether through its shorthand or through
// `attribute`.
func (p *groupParser) setAttr(d *caddyfile.Dispenser, key, val string) error {
	field := "attributes." + key
	if prev, dup := p.at[field]; dup {
		return d.Errf("duplicate attribute %q: already set by '%s' on line %d", key, prev.Text, prev.Line)
	}
	p.at[field] = p.cur
	if p.cfg.Attributes == nil {
		p.cfg.Attributes = make(map[string]string)
	}
	p.cfg.Attributes[key] = val
	return nil
}

// parseStickiness reads the stickiness shorthand into the attributes AWS
// uses for it:
//
//	stickiness lb_cookie [<duration>]
//	stickiness app_cookie <cookie_name> [<duration>]
//	stickiness source_ip|off
func (p *groupParser) parseStickiness(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	kind := strings.ToLower(args[0])
	attrs := [][2]string{{targetgroup.AttrStickinessEnabled, "true"}, {targetgroup.AttrStickinessType, kind}}
	var durationKey string
	var rest []string
	switch kind {
	case "off":
		if len(args) != 1 {
			return d.ArgErr()
		}
		attrs = attrs[:1]
		attrs[0][1] = "false"
	case "source_ip":
		if len(args) != 1 {
			return d.ArgErr()
		}
	case "lb_cookie":
		durationKey, rest = targetgroup.AttrLBCookieDuration, args[1:]
	case "app_cookie":
		if len(args) < 2 {
			return d.ArgErr()
		}
		attrs = append(attrs, [2]string{targetgroup.AttrAppCookieName, args[1]})
		durationKey, rest = targetgroup.AttrAppCookieDuration, args[2:]
	default:
		return d.Errf("stickiness: unknown type '%s'; expected lb_cookie, app_cookie, source_ip or off", args[0])
	}
	switch len(rest) {
	case 0:
	case 1:
		secs, err := wholeSeconds(d, "stickiness", rest[0])
		if err != nil {
			return err
		}
		attrs = append(attrs, [2]string{durationKey, secs})
	default:
		return d.ArgErr()
	}
	for _, kv := range attrs {
		if err := p.setAttr(d, kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}
