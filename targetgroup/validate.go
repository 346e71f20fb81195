package targetgroup

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caddy-targetgroup/caddy-targetgroup/healthcheck"
)

// The rules of the AWS documents for a group and its targets: the group's
// protocol and type, its health check, its tags and the target addresses.
// Attribute rules are in attributes.go.

// ValidateName checks a group name as VPC Lattice does: 3–128 characters
// a-z, 0-9 and hyphens, no hyphen first, last or twice in a row, and not the
// "tg-" prefix that group IDs use.
func ValidateName(name string) error {
	switch {
	case len(name) < 3 || len(name) > 128:
		return fieldErr("name", "%q must be 3-128 characters long", name)
	case strings.HasPrefix(name, "tg-"):
		return fieldErr("name", "%q must not begin with \"tg-\" (reserved for group IDs)", name)
	case name[0] == '-' || name[len(name)-1] == '-' || strings.Contains(name, "--"):
		return fieldErr("name", "%q must not begin or end with a hyphen or contain two hyphens in a row", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return fieldErr("name", "%q may contain only a-z, 0-9 and hyphens", name)
		}
	}
	return nil
}

// ValidateELBv2Name checks a group name as ELBv2 does: 1–32 characters,
// letters, digits and hyphens, not beginning or ending with a hyphen. A
// name of the form of a group id is refused too, since the APIs take an id
// wherever they take a name.
func ValidateELBv2Name(name string) error {
	switch {
	case len(name) < 1 || len(name) > 32:
		return fieldErr("name", "%q must be 1-32 characters long", name)
	case name[0] == '-' || name[len(name)-1] == '-':
		return fieldErr("name", "%q must not begin or end with a hyphen", name)
	case validGroupID(name):
		return fieldErr("name", "%q has the form of a target group id (tg- and 17 hex characters), which names cannot have", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return fieldErr("name", "%q may contain only A-Z, a-z, 0-9 and hyphens", name)
		}
	}
	return nil
}

// validStoredName accepts a name that either API's rules allow: a name
// read back from storage or another node was checked when it was created,
// by the rules of the API it was created through.
func validStoredName(name string) error {
	if ValidateName(name) == nil || ValidateELBv2Name(name) == nil {
		return nil
	}
	return ValidateName(name)
}

// ValidVPCID checks a VPC identifier as VPC Lattice's model does.
func ValidVPCID(id string) bool {
	rest, ok := strings.CutPrefix(id, "vpc-")
	if !ok || len(rest) != 8 && len(rest) != 17 {
		return false
	}
	return !strings.ContainsFunc(rest, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') })
}

func normalizeGroup(c *GroupConfig) error {
	c.Type = lower(c.Type)
	c.LambdaEventStructureVersion = upper(c.LambdaEventStructureVersion)
	c.VPCID = strings.TrimSpace(c.VPCID)
	switch {
	case c.VPCID != "" && c.Type == TypeLambda:
		return fieldErr("vpc_id", "not supported for lambda target groups")
	case c.VPCID != "" && !ValidVPCID(c.VPCID):
		return fieldErr("vpc_id", "%q must be vpc- and 8 or 17 characters of a-z 0-9", c.VPCID)
	case c.LambdaEventStructureVersion != "" && c.Type != TypeLambda:
		return fieldErr("lambda_event_structure_version", "supported only for lambda target groups")
	case c.LambdaEventStructureVersion != "" && c.LambdaEventStructureVersion != "V1" && c.LambdaEventStructureVersion != "V2":
		return fieldErr("lambda_event_structure_version", "%q must be V1 or V2 (VPC Lattice's event structures), or empty for ALB's event", c.LambdaEventStructureVersion)
	}
	c.Protocol = upper(c.Protocol)
	c.ProtocolVersion = upper(c.ProtocolVersion)
	c.IPAddressType = lower(c.IPAddressType)
	switch c.Type {
	case "":
		c.Type = TypeIP
	case TypeIP, TypeInstance, TypeALB, TypeLambda:
	default:
		return fieldErr("type", "%q must be one of ip, instance, alb, lambda", c.Type)
	}
	if c.Type == TypeLambda {
		switch {
		case c.Protocol != "":
			return fieldErr("protocol", "not supported for lambda target groups")
		case c.ProtocolVersion != "":
			return fieldErr("protocol_version", "not supported for lambda target groups")
		case c.Port != 0:
			return fieldErr("port", "not supported for lambda target groups")
		case c.IPAddressType != "":
			return fieldErr("ip_address_type", "not supported for lambda target groups")
		}
		return nil
	}
	switch c.Protocol {
	case "":
		c.Protocol = ProtocolHTTP
	case ProtocolHTTP, ProtocolHTTPS, ProtocolTCP, ProtocolTLS, ProtocolUDP, ProtocolTCPUDP:
	default:
		return fieldErr("protocol", "%q must be one of HTTP, HTTPS, TCP, TLS, UDP, TCP_UDP", c.Protocol)
	}
	if c.Type == TypeALB && c.Protocol != ProtocolHTTP && c.Protocol != ProtocolHTTPS && c.Protocol != ProtocolTCP {
		return fieldErr("protocol", "%s is not supported for alb target groups; use HTTP, HTTPS or TCP", c.Protocol)
	}
	alb := c.Protocol == ProtocolHTTP || c.Protocol == ProtocolHTTPS
	switch {
	case !alb && c.ProtocolVersion != "":
		return fieldErr("protocol_version", "only HTTP and HTTPS groups have a protocol version")
	case alb && c.ProtocolVersion == "":
		c.ProtocolVersion = VersionHTTP1
	case alb && c.ProtocolVersion != VersionHTTP1 && c.ProtocolVersion != VersionHTTP2 && c.ProtocolVersion != VersionGRPC:
		return fieldErr("protocol_version", "%q must be one of HTTP1, HTTP2, GRPC", c.ProtocolVersion)
	case c.ProtocolVersion != VersionHTTP1 && c.ProtocolVersion != "" && c.Type == TypeALB:
		return fieldErr("protocol_version", "%s is supported only for target types ip and instance", c.ProtocolVersion)
	}
	switch {
	case c.Port == 0 && c.Protocol == ProtocolHTTP:
		c.Port = 80
	case c.Port == 0 && c.Protocol == ProtocolHTTPS:
		c.Port = 443
	case c.Port == 0:
		return fieldErr("port", "required for %s groups (1-65535)", c.Protocol)
	case c.Port < 1 || c.Port > 65535:
		return fieldErr("port", "%d is outside 1-65535", c.Port)
	}
	switch c.IPAddressType {
	case "":
		c.IPAddressType = IPv4
	case IPv4:
	case IPv6:
		if c.Type != TypeIP && c.Type != TypeInstance {
			return fieldErr("ip_address_type", "ipv6 is supported only for target types ip and instance")
		}
		if c.Protocol == ProtocolUDP || c.Protocol == ProtocolTCPUDP {
			// NLB: "IPv6 target groups can only be used with ... TCP or a
			// TLS listeners".
			return fieldErr("ip_address_type", "ipv6 target groups support the protocols HTTP, HTTPS, TCP and TLS, not %s", c.Protocol)
		}
	default:
		return fieldErr("ip_address_type", "%q must be ipv4 or ipv6", c.IPAddressType)
	}
	return nil
}

// normalizeHealthCheck fills in the health check's defaults and checks it,
// in the order its settings depend on one another: protocol and version,
// then the path, the timing, and the matcher.
func normalizeHealthCheck(c *GroupConfig) (HealthCheckSpec, error) {
	if c.HealthCheck == nil {
		c.HealthCheck = &HealthCheckConfig{}
	}
	hc := c.HealthCheck
	if hc.Enabled == nil {
		on := c.Type != TypeLambda
		hc.Enabled = &on
	}
	if err := healthCheckProtocol(c); err != nil {
		return HealthCheckSpec{}, err
	}
	if err := healthCheckPath(hc); err != nil {
		return HealthCheckSpec{}, err
	}
	if err := healthCheckTiming(c); err != nil {
		return HealthCheckSpec{}, err
	}
	matcher, err := healthCheckMatcher(c)
	if err != nil {
		return HealthCheckSpec{}, err
	}
	hs := HealthCheckSpec{
		Enabled:            *hc.Enabled,
		Port:               hc.Port.Port,
		Interval:           time.Duration(hc.Interval),
		HealthyThreshold:   hc.HealthyThreshold,
		UnhealthyThreshold: hc.UnhealthyThreshold,
		PassiveThreshold:   hc.PassiveUnhealthyThreshold,
		Probe: healthcheck.Spec{
			Protocol:        hc.Protocol,
			ProtocolVersion: hc.ProtocolVersion,
			Path:            hc.Path,
			Timeout:         time.Duration(hc.Timeout),
			Matcher:         matcher,
		},
	}
	hc.Port = HealthCheckPort{Port: hc.Port.Port, set: true}
	return hs, nil
}

// healthCheckProtocol settles the check's protocol and protocol version
// against the group's.
func healthCheckProtocol(c *GroupConfig) error {
	hc := c.HealthCheck
	fam := familyOf(c)
	hc.Protocol = upper(hc.Protocol)
	hc.ProtocolVersion = upper(hc.ProtocolVersion)
	switch {
	case hc.Protocol == "" && fam == famNLB && c.Type != TypeALB:
		hc.Protocol = ProtocolTCP
	case hc.Protocol == "":
		hc.Protocol = ProtocolHTTP
	case hc.Protocol != ProtocolHTTP && hc.Protocol != ProtocolHTTPS && hc.Protocol != ProtocolTCP:
		return fieldErr("health_check.protocol", "%q must be one of HTTP, HTTPS, TCP", hc.Protocol)
	case hc.Protocol == ProtocolTCP && fam != famNLB:
		return fieldErr("health_check.protocol", "TCP health checks are not supported for %s groups; use HTTP or HTTPS", groupKind(c))
	case hc.Protocol == ProtocolTCP && c.Type == TypeALB:
		return fieldErr("health_check.protocol", "target groups of type alb support HTTP and HTTPS health checks only")
	}
	httpCheck := hc.Protocol != ProtocolTCP
	switch {
	case !httpCheck && hc.ProtocolVersion != "":
		return fieldErr("health_check.protocol_version", "TCP health checks have no protocol version")
	case httpCheck && hc.ProtocolVersion == "" && fam == famALB:
		hc.ProtocolVersion = c.ProtocolVersion
	case httpCheck && hc.ProtocolVersion == "":
		hc.ProtocolVersion = VersionHTTP1
	case httpCheck && hc.ProtocolVersion != VersionHTTP1 && hc.ProtocolVersion != VersionHTTP2 && hc.ProtocolVersion != VersionGRPC:
		return fieldErr("health_check.protocol_version", "%q must be one of HTTP1, HTTP2, GRPC", hc.ProtocolVersion)
	case hc.ProtocolVersion == VersionGRPC && c.ProtocolVersion != VersionGRPC:
		return fieldErr("health_check.protocol_version", "GRPC health checks require the group's protocol_version GRPC")
	}
	return nil
}

// healthCheckPath settles the path of an HTTP check, or the method of a
// gRPC one; TCP checks have none.
func healthCheckPath(hc *HealthCheckConfig) error {
	httpCheck, grpc := hc.Protocol != ProtocolTCP, hc.ProtocolVersion == VersionGRPC
	switch {
	case !httpCheck && hc.Path != "":
		return fieldErr("health_check.path", "TCP health checks have no path")
	case httpCheck && hc.Path == "" && grpc:
		hc.Path = healthcheck.DefaultGRPCPath
	case httpCheck && hc.Path == "":
		hc.Path = healthcheck.DefaultPath
	case httpCheck:
		return checkPath(hc.Path, grpc)
	}
	return nil
}

// healthCheckTiming settles the interval, timeout and thresholds, whose
// defaults depend on the kind of group.
func healthCheckTiming(c *GroupConfig) error {
	hc := c.HealthCheck
	interval, timeout := 30*time.Second, 5*time.Second
	switch fam := familyOf(c); {
	case c.Type == TypeLambda:
		interval, timeout = 35*time.Second, 30*time.Second
	case fam == famNLB && hc.Protocol == ProtocolHTTP:
		timeout = 6 * time.Second
	case fam == famNLB:
		timeout = 10 * time.Second
	}
	if hc.Interval == 0 {
		hc.Interval = Duration(interval)
	}
	if hc.Timeout == 0 {
		hc.Timeout = Duration(timeout)
	}
	if hc.HealthyThreshold == 0 {
		hc.HealthyThreshold = 5
	}
	if hc.UnhealthyThreshold == 0 {
		hc.UnhealthyThreshold = 2
	}
	switch iv, to := time.Duration(hc.Interval), time.Duration(hc.Timeout); {
	case iv < 5*time.Second || iv > 300*time.Second:
		return fieldErr("health_check.interval", "%s is outside 5s-300s", hc.Interval)
	case to < time.Second || to > 120*time.Second:
		return fieldErr("health_check.timeout", "%s is outside 1s-120s", hc.Timeout)
	case to >= iv:
		return fieldErr("health_check.timeout", "%s must be shorter than the interval %s", hc.Timeout, hc.Interval)
	case hc.HealthyThreshold < 2 || hc.HealthyThreshold > 10:
		return fieldErr("health_check.healthy_threshold", "%d is outside 2-10", hc.HealthyThreshold)
	case hc.UnhealthyThreshold < 2 || hc.UnhealthyThreshold > 10:
		return fieldErr("health_check.unhealthy_threshold", "%d is outside 2-10", hc.UnhealthyThreshold)
	case hc.PassiveUnhealthyThreshold < 0 || hc.PassiveUnhealthyThreshold > 100:
		return fieldErr("health_check.passive_unhealthy_threshold", "%d must be 0 (off) or within 1-100", hc.PassiveUnhealthyThreshold)
	}
	return nil
}

// nlbHTTPCodes are the success codes of HTTP checks of layer 4 groups, as
// NLB has them (ALB's are healthcheck.DefaultHTTPCodes).
const nlbHTTPCodes = "200-399"

// healthCheckMatcher settles the success codes of an HTTP or gRPC check;
// TCP checks have none.
func healthCheckMatcher(c *GroupConfig) (healthcheck.Matcher, error) {
	hc := c.HealthCheck
	httpCheck, grpc := hc.Protocol != ProtocolTCP, hc.ProtocolVersion == VersionGRPC
	m := hc.Matcher
	switch {
	case !httpCheck && m != nil && (m.HTTPCode != "" || m.GRPCCode != ""):
		return healthcheck.Matcher{}, fieldErr("health_check.matcher", "TCP health checks have no matcher")
	case !httpCheck:
		hc.Matcher = nil
		return healthcheck.Matcher{}, nil
	case m != nil && m.HTTPCode != "" && m.GRPCCode != "":
		return healthcheck.Matcher{}, fieldErr("health_check.matcher", "set either http_code or grpc_code, not both")
	case grpc && m != nil && m.HTTPCode != "":
		return healthcheck.Matcher{}, fieldErr("health_check.matcher.http_code", "gRPC health checks match grpc_code")
	case !grpc && m != nil && m.GRPCCode != "":
		return healthcheck.Matcher{}, fieldErr("health_check.matcher.grpc_code", "only gRPC health checks match grpc_code")
	}
	if m == nil {
		m = &MatcherConfig{}
		hc.Matcher = m
	}
	field, spec, def := "health_check.matcher.http_code", &m.HTTPCode, healthcheck.DefaultHTTPCodes
	if familyOf(c) == famNLB {
		def = nlbHTTPCodes
	}
	if grpc {
		field, spec, def = "health_check.matcher.grpc_code", &m.GRPCCode, healthcheck.DefaultGRPCCodes
		if hc.Path == healthcheck.GRPCHealthMethod {
			// The standard health service answers 0 (OK) when serving.
			def = "0"
		}
	}
	if *spec == "" {
		*spec = def
	}
	matcher, err := healthcheck.ParseMatcher(*spec, grpc)
	if err != nil {
		return healthcheck.Matcher{}, fieldErr(field, "%v", err)
	}
	return matcher, nil
}

func groupKind(c *GroupConfig) string {
	if c.Type == TypeLambda {
		return "lambda"
	}
	return c.Protocol
}

// checkPath accepts what AWS accepts: a path beginning with "/", at most
// 1024 characters of URI characters (for gRPC: /package.service/method).
func checkPath(p string, grpc bool) error {
	if !strings.HasPrefix(p, "/") || len(p) > 1024 {
		return fieldErr("health_check.path", "%q must begin with \"/\" and be at most 1024 characters", p)
	}
	for _, r := range p {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"<>\^`+"`{|}", r) {
			return fieldErr("health_check.path", "%q contains %q, which is not a URI character", p, r)
		}
	}
	if grpc && strings.Count(p, "/") != 2 {
		return fieldErr("health_check.path", "%q must name a gRPC method as /package.service/method", p)
	}
	return nil
}

// validateTags applies AWS's tag rules.
func validateTags(tags map[string]string) error {
	if len(tags) > 50 {
		return fieldErr("tags", "%d tags; at most 50 are allowed", len(tags))
	}
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		v := tags[k]
		switch n := utf8.RuneCountInString(k); {
		case n < 1 || n > 128:
			return keyErr("tags", k, "key %q must be 1-128 characters long", k)
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			return keyErr("tags", k, "key %q must not begin with \"aws:\" (reserved)", k)
		case !tagChars(k):
			return keyErr("tags", k, "key %q may contain only letters, digits, white space and _ . : / = + - @", k)
		case utf8.RuneCountInString(v) > 256:
			return fieldErr("tags."+k, "value must be at most 256 characters long")
		case !tagChars(v):
			return fieldErr("tags."+k, "value %q may contain only letters, digits, white space and _ . : / = + - @", v)
		}
	}
	return nil
}

func tagChars(s string) bool {
	for _, r := range s {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsNumber(r) || unicode.Is(unicode.Zs, r) || strings.ContainsRune("_.:/=+-@", r)) {
			return false
		}
	}
	return true
}

// checkTargetCount applies the one-target rule of lambda and alb groups.
func (s *Spec) checkTargetCount(n int) error {
	if (s.Config.Type == TypeLambda || s.Config.Type == TypeALB) && n > 1 {
		return fieldErr("targets", "a %s target group holds a single target", s.Config.Type)
	}
	if n > maxTargetsPerGroup {
		return fieldErr("targets", "at most %d targets per group", maxTargetsPerGroup)
	}
	return nil
}

// NormalizeTarget checks one target against the group and fills its port.
func (s *Spec) NormalizeTarget(t TargetConfig, allowed []netip.Prefix) (TargetConfig, error) {
	c := &s.Config
	t.ID = strings.TrimSpace(t.ID)
	if t.ID == "" {
		return t, fieldErr("id", "required")
	}
	if len(t.AvailabilityZone) > 64 || strings.ContainsFunc(t.AvailabilityZone, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return t, fieldErr("availability_zone", "%q must be at most 64 printable ASCII characters", t.AvailabilityZone)
	}
	if t.Weight < 0 || t.Weight > 1000 {
		return t, fieldErr("weight", "%d is outside 1-1000", t.Weight)
	}
	if c.Type == TypeLambda {
		if t.Port != 0 {
			return t, fieldErr("port", "lambda targets have no port")
		}
		if !lambdaID(t.ID) {
			return t, fieldErr("id", "%q must be a Lambda function name (1-64 of A-Z a-z 0-9 - _) or function ARN", t.ID)
		}
		return t, nil
	}
	switch {
	case t.Port == 0:
		t.Port = c.Port
	case t.Port < 0 || t.Port > 65535:
		return t, fieldErr("port", "%d is outside 1-65535", t.Port)
	}
	switch c.Type {
	case TypeIP:
		ip, err := netip.ParseAddr(t.ID)
		if err != nil || ip.Zone() != "" {
			return t, fieldErr("id", "%q is not an IP address (target type ip)", t.ID)
		}
		ip = ip.Unmap()
		if err := checkIP(ip, c.IPAddressType, allowed); err != nil {
			return t, err
		}
		if isAdminListener(ip, t.Port) {
			return t, errAdminListener(ip, t.Port)
		}
		t.ID = ip.String()
	case TypeInstance, TypeALB:
		if ip, err := netip.ParseAddr(t.ID); err == nil {
			if c.Type == TypeInstance {
				return t, fieldErr("id", "%q is an IP address; instance targets are host names (use a target group of type ip for addresses)", t.ID)
			}
			if err := checkIP(ip.Unmap(), c.IPAddressType, allowed); err != nil {
				return t, err
			}
			if isAdminListener(ip, t.Port) {
				return t, errAdminListener(ip, t.Port)
			}
			t.ID = ip.Unmap().String()
			break
		}
		if !hostname(t.ID) {
			return t, fieldErr("id", "%q is not a valid DNS host name", t.ID)
		}
		t.ID = strings.ToLower(strings.TrimSuffix(t.ID, "."))
	}
	return t, nil
}

func hostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

func lambdaID(id string) bool {
	name := id
	if strings.HasPrefix(id, "arn:") {
		parts := strings.Split(id, ":")
		// arn:partition:lambda:region:account:function:name[:qualifier]
		if len(parts) < 7 || len(parts) > 8 || parts[2] != "lambda" || parts[5] != "function" || len(parts[4]) != 12 {
			return false
		}
		if _, err := strconv.ParseUint(parts[4], 10, 64); err != nil {
			return false
		}
		name = parts[6]
	}
	if len(name) < 1 || len(name) > 64 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
