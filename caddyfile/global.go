package caddyfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
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
//		max_targets_per_group <n>
//		max_groups <n>
//		max_udp_flows_per_group <n>
//		<name> {
//			type ip|instance|alb|lambda
//			protocol HTTP|HTTPS|TCP|TLS|UDP|TCP_UDP
//			protocol_version HTTP1|HTTP2|GRPC
//			port <n>
//			ip_address_type ipv4|ipv6
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

	case "attribute":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return d.ArgErr()
		}
		return p.setAttr(d, args[0], args[1])

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

// parseTargets turns the target lines into TargetConfigs.
func (p *groupParser) parseTargets() error {
	lambda := p.cfg.Type == targetgroup.TypeLambda
	for _, t := range p.targets {
		tc := targetgroup.TargetConfig{ID: t.addr, AvailabilityZone: t.zone}
		// Function ARNs are full of colons that are not ports.
		if !lambda && !strings.HasPrefix(t.addr, "arn:") {
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

// validationErr reports a targetgroup error at the line that set the field
// it names, or at the group's name if no line did (a default is wrong
// given the other settings, say).
func (p *groupParser) validationErr(err error) error {
	tok := p.name
	var ve *targetgroup.ValidationError
	if errors.As(err, &ve) {
		tok = p.where(ve.Field, ve.Message)
	}
	return errAt(tok, fmt.Errorf("target group %q: %w", p.name.Text, err))
}

// where finds the token that set field or, failing that, its closest
// enclosing field. Errors about the attributes or tags as a whole name
// the key they are about in the message.
func (p *groupParser) where(field, msg string) caddyfile.Token {
	for f := field; f != ""; f = parentField(f) {
		if tok, ok := p.at[f]; ok {
			return tok
		}
		if f != "attributes" && f != "tags" {
			continue
		}
		var keys []string
		for k := range p.at {
			if key, ok := strings.CutPrefix(k, f+"."); ok {
				keys = append(keys, key)
			}
		}
		sort.Strings(keys)
		// A quoted key is the one the message is about; other keys may
		// be listed as alternatives.
		for _, k := range keys {
			if strings.Contains(msg, strconv.Quote(k)) {
				return p.at[f+"."+k]
			}
		}
		for _, k := range keys {
			if strings.Contains(msg, k) {
				return p.at[f+"."+k]
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

// errAt wraps err with the file and line of tok, as the dispenser would
// had it been at tok.
func errAt(tok caddyfile.Token, err error) error {
	d := caddyfile.NewDispenser([]caddyfile.Token{tok})
	d.Next()
	return d.WrapErr(err)
}

// oneArg returns the single argument of the current option.
func oneArg(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

// durationArg returns the single duration argument of the option opt.
func durationArg(d *caddyfile.Dispenser, opt string) (targetgroup.Duration, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, d.Errf("%s: %v", opt, err)
	}
	// 0 is how the config says "default"; a written 0 would be silently
	// replaced rather than rejected.
	if dur == 0 {
		return 0, d.Errf("%s: must not be 0; leave it out for the default", opt)
	}
	return targetgroup.Duration(dur), nil
}

// intArg returns the single integer argument of the option opt.
func intArg(d *caddyfile.Dispenser, opt string) (int, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, d.Errf("%s: '%s' is not an integer", opt, v)
	}
	// 0 is how the config says "default"; a written 0 would be silently
	// replaced rather than rejected.
	if n == 0 {
		return 0, d.Errf("%s: must not be 0; leave it out for the default", opt)
	}
	return n, nil
}

// wholeSeconds converts a duration argument of opt into the decimal
// seconds AWS attributes hold.
func wholeSeconds(d *caddyfile.Dispenser, opt, v string) (string, error) {
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return "", d.Errf("%s: %v", opt, err)
	}
	if dur%time.Second != 0 {
		return "", d.Errf("%s: %s is not a whole number of seconds", opt, v)
	}
	return strconv.FormatInt(int64(dur/time.Second), 10), nil
}
