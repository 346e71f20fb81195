package caddyfile

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// groupParser reads one group block. It remembers the token that set each
// field, keyed by the field path targetgroup's validation errors use
// ("port", "health_check.interval", "attributes.<key>", "tags.<key>",
// "targets[<i>]"), which both detects duplicates and lets a validation
// error point at the offending line rather than at the end of the block.
type groupParser struct {
	name    caddyfile.Token
	cfg     targetgroup.GroupConfig
	at      map[string]caddyfile.Token
	targets []targetLine
	// The option being read: the dispenser may be past its arguments
	// when it is recorded.
	cur caddyfile.Token
}

// targetLine is a target as written; it is parsed once the whole block is
// read, because whether it is a Lambda function depends on the group's
// type, which may come later in the block.
type targetLine struct {
	tok  caddyfile.Token
	addr string
	zone string
}

// parseGroup reads the block of the group whose name is the current token
// and validates the result against allowed.
func parseGroup(d *caddyfile.Dispenser, allowed []netip.Prefix) (*targetgroup.GroupConfig, error) {
	p := &groupParser{name: d.Token(), at: make(map[string]caddyfile.Token)}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := p.parseOption(d); err != nil {
			return nil, err
		}
	}
	if err := p.parseTargets(); err != nil {
		return nil, err
	}
	if err := targetgroup.ValidateName(p.name.Text); err != nil {
		return nil, p.validationErr(err)
	}
	if _, err := targetgroup.NewSpec(&p.cfg, allowed); err != nil {
		return nil, p.validationErr(err)
	}
	return &p.cfg, nil
}

// parseOption reads one line of a group block; see parseTargetGroups for
// the syntax.
func (p *groupParser) parseOption(d *caddyfile.Dispenser) error {
	c := &p.cfg
	p.cur = d.Token()
	switch opt := d.Val(); opt {
	case "type", "protocol", "protocol_version", "ip_address_type":
		if err := p.once(d, opt, opt); err != nil {
			return err
		}
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		switch opt {
		case "type":
			c.Type = strings.ToLower(v)
		case "protocol":
			c.Protocol = strings.ToUpper(v)
		case "protocol_version":
			c.ProtocolVersion = strings.ToUpper(v)
		case "ip_address_type":
			c.IPAddressType = strings.ToLower(v)
		}

	case "vpc_id", "lambda_event_structure_version":
		if err := p.once(d, opt, opt); err != nil {
			return err
		}
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		if opt == "vpc_id" {
			c.VPCID = v
		} else {
			c.LambdaEventStructureVersion = strings.ToUpper(v)
		}

	case "port":
		if err := p.once(d, opt, opt); err != nil {
			return err
		}
		n, err := intArg(d, opt)
		if err != nil {
			return err
		}
		c.Port = n

	case "health_check":
		return p.parseHealthCheck(d)

	case "deregistration_delay", "algorithm", "slow_start", "stickiness", "attribute":
		return p.parseAttribute(d, opt)

	case "target":
		args := d.RemainingArgs()
		switch {
		case len(args) == 0:
			return d.ArgErr()
		case len(args) > 1 && !strings.EqualFold(args[1], "zone"):
			return d.Errf("target: unexpected '%s'; expected 'zone <availability zone>'", args[1])
		case len(args) != 1 && len(args) != 3:
			return d.ArgErr()
		}
		t := targetLine{tok: p.cur, addr: args[0]}
		if len(args) == 3 {
			t.zone = args[2]
		}
		p.at[fmt.Sprintf("targets[%d]", len(p.targets))] = t.tok
		// Errors about the number of targets are about the one too many.
		p.at["targets"] = t.tok
		p.targets = append(p.targets, t)

	case "tag":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return d.ArgErr()
		}
		if prev, dup := p.at["tags."+args[0]]; dup {
			return d.Errf("duplicate tag %q: already set on line %d", args[0], prev.Line)
		}
		p.at["tags."+args[0]] = p.cur
		if c.Tags == nil {
			c.Tags = make(map[string]string)
		}
		c.Tags[args[0]] = args[1]

	default:
		return d.Errf("unrecognized target group option '%s'", opt)
	}
	return nil
}

// parseTargets turns the target lines into TargetConfigs.
func (p *groupParser) parseTargets() error {
	for _, t := range p.targets {
		tc := targetgroup.TargetConfig{ID: t.addr, AvailabilityZone: t.zone}
		// ARNs are full of colons that are not ports. A function name with
		// a port is split too, so that the error says lambda targets have
		// no port.
		if !strings.HasPrefix(t.addr, "arn:") {
			host, port, err := net.SplitHostPort(t.addr)
			switch {
			case err != nil:
				// No port: a host, an IPv4 address, or an IPv6 address
				// with or without brackets.
				tc.ID = strings.TrimSuffix(strings.TrimPrefix(t.addr, "["), "]")
			default:
				n, err := strconv.Atoi(port)
				if err != nil {
					return errAt(t.tok, fmt.Errorf("target: '%s' has port '%s', which is not a number", t.addr, port))
				}
				tc.ID, tc.Port = host, n
			}
		}
		p.cfg.Targets = append(p.cfg.Targets, tc)
	}
	return nil
}

// once records that the option at the current token sets field, and fails
// if something set it before.
func (p *groupParser) once(d *caddyfile.Dispenser, field, label string) error {
	if prev, dup := p.at[field]; dup {
		return d.Errf("duplicate %s: already set on line %d", label, prev.Line)
	}
	p.at[field] = p.cur
	return nil
}

// validationErr reports a targetgroup error at the line that set the field
// it names, or else the field that caused it, or at the group's name if no
// line did (a default is wrong given the other settings, say).
func (p *groupParser) validationErr(err error) error {
	tok := p.name
	var ve *targetgroup.ValidationError
	if errors.As(err, &ve) {
		tok = p.where(ve.Field, ve.Cause)
	}
	return errAt(tok, fmt.Errorf("target group %q: %w", p.name.Text, err))
}

// where finds the token that set the first of fields that a line set or,
// failing that, its closest enclosing field.
func (p *groupParser) where(fields ...string) caddyfile.Token {
	for _, field := range fields {
		for f := field; f != ""; f = parentField(f) {
			if tok, ok := p.at[f]; ok {
				return tok
			}
		}
	}
	return p.name
}

// parentField strips the last ".name" or "[i]" of a field path.
func parentField(f string) string {
	i := strings.LastIndexAny(f, ".[")
	if i < 0 {
		return ""
	}
	return f[:i]
}
