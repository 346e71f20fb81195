package targetgroup

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Attribute keys, as AWS spells them.
const (
	AttrDeregistrationDelay       = "deregistration_delay.timeout_seconds"
	AttrConnectionTermination     = "deregistration_delay.connection_termination.enabled"
	AttrAlgorithm                 = "load_balancing.algorithm.type"
	AttrAnomalyMitigation         = "load_balancing.algorithm.anomaly_mitigation"
	AttrCrossZone                 = "load_balancing.cross_zone.enabled"
	AttrSlowStart                 = "slow_start.duration_seconds"
	AttrStickinessEnabled         = "stickiness.enabled"
	AttrStickinessType            = "stickiness.type"
	AttrLBCookieDuration          = "stickiness.lb_cookie.duration_seconds"
	AttrAppCookieName             = "stickiness.app_cookie.cookie_name"
	AttrLBCookieName              = "stickiness.lb_cookie.cookie_name"
	AttrAppCookieDuration         = "stickiness.app_cookie.duration_seconds"
	AttrPreserveClientIP          = "preserve_client_ip.enabled"
	AttrProxyProtocolV2           = "proxy_protocol_v2.enabled"
	AttrDNSFailoverCount          = "target_group_health.dns_failover.minimum_healthy_targets.count"
	AttrDNSFailoverPercentage     = "target_group_health.dns_failover.minimum_healthy_targets.percentage"
	AttrRoutingFailoverCount      = "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count"
	AttrRoutingFailoverPercentage = "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage"
	AttrUnhealthyConnTermination  = "target_health_state.unhealthy.connection_termination.enabled"
	AttrUnhealthyDrainingInterval = "target_health_state.unhealthy.draining_interval_seconds"
	AttrLambdaMultiValueHeaders   = "lambda.multi_value_headers.enabled"
)

// Algorithms a group may use (load_balancing.algorithm.type).
const (
	AlgorithmRoundRobin               = "round_robin"
	AlgorithmLeastOutstandingRequests = "least_outstanding_requests"
	AlgorithmWeightedRandom           = "weighted_random"
)

// family says which load balancer an attribute belongs to: ALB (HTTP and
// HTTPS groups), NLB (layer 4 groups) or Lambda.
type family uint8

const (
	famALB family = 1 << iota
	famNLB
	famLambda
)

// attrDef is one attribute: where it applies, its default and its syntax.
// The table below is the only place attribute rules live; config, Caddyfile
// and admin API all go through it.
type attrDef struct {
	key      string
	families family
	def      func(c *GroupConfig) string
	check    func(v string) error
}

func constant(v string) func(*GroupConfig) string { return func(*GroupConfig) string { return v } }

var attrDefs = []attrDef{
	{AttrDeregistrationDelay, famALB | famNLB, constant("300"), intIn(0, 3600)},
	{AttrConnectionTermination, famNLB, func(c *GroupConfig) string {
		return strconv.FormatBool(c.Protocol == ProtocolUDP || c.Protocol == ProtocolTCPUDP)
	}, boolean},
	{AttrAlgorithm, famALB | famNLB, constant(AlgorithmRoundRobin), oneOf(AlgorithmRoundRobin, AlgorithmLeastOutstandingRequests, AlgorithmWeightedRandom)},
	{AttrAnomalyMitigation, famALB, constant("off"), oneOf("on", "off")},
	{AttrCrossZone, famALB | famNLB, constant("use_load_balancer_configuration"), oneOf("true", "false", "use_load_balancer_configuration")},
	{AttrSlowStart, famALB, constant("0"), func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || (n != 0 && (n < 30 || n > 900)) {
			return fmt.Errorf("must be 0 (disabled) or an integer within 30-900")
		}
		return nil
	}},
	{AttrStickinessEnabled, famALB | famNLB, constant("false"), boolean},
	{AttrStickinessType, famALB | famNLB, func(c *GroupConfig) string {
		if familyOf(c) == famNLB {
			return StickinessSourceIP
		}
		return StickinessLBCookie
	}, oneOf(StickinessLBCookie, StickinessAppCookie, StickinessSourceIP)},
	{AttrLBCookieDuration, famALB, constant("86400"), intIn(1, 604800)},
	// Our addition: ALB's cookie is always AWSALB, which clashes when two
	// layers of load balancers both stick (the ALB document warns of it).
	{AttrLBCookieName, famALB, constant("AWSALB"), checkCookieName},
	{AttrAppCookieName, famALB, constant(""), checkAppCookieName},
	{AttrAppCookieDuration, famALB, constant("86400"), intIn(1, 604800)},
	{AttrPreserveClientIP, famNLB, func(c *GroupConfig) string {
		return strconv.FormatBool(!(c.Type == TypeIP && (c.Protocol == ProtocolTCP || c.Protocol == ProtocolTLS)))
	}, boolean},
	{AttrProxyProtocolV2, famNLB, constant("false"), boolean},
	{AttrDNSFailoverCount, famALB | famNLB, func(c *GroupConfig) string {
		if familyOf(c) == famNLB {
			return "1"
		}
		return "off"
	}, offOrIntIn(1, maxTargetsPerGroup)},
	{AttrDNSFailoverPercentage, famALB | famNLB, constant("off"), offOrIntIn(1, 100)},
	{AttrRoutingFailoverCount, famALB | famNLB, constant("1"), intIn(1, maxTargetsPerGroup)},
	{AttrRoutingFailoverPercentage, famALB | famNLB, constant("off"), offOrIntIn(1, 100)},
	{AttrUnhealthyConnTermination, famNLB, constant("true"), boolean},
	{AttrUnhealthyDrainingInterval, famNLB, constant("0"), intIn(0, 360000)},
	{AttrLambdaMultiValueHeaders, famLambda, constant("false"), boolean},
}

// maxTargetsPerGroup bounds registrations per group (AWS: 1,000 per ALB
// target group; we allow more, as a Caddy host is not an AWS quota).
const maxTargetsPerGroup = 100000

func attrDefFor(key string) (attrDef, bool) {
	for _, d := range attrDefs {
		if d.key == key {
			return d, true
		}
	}
	return attrDef{}, false
}

func familyOf(c *GroupConfig) family {
	switch {
	case c.Type == TypeLambda:
		return famLambda
	case c.Protocol == ProtocolHTTP || c.Protocol == ProtocolHTTPS || c.Protocol == "":
		return famALB
	default:
		return famNLB
	}
}

func (f family) String() string {
	switch f {
	case famALB:
		return "HTTP/HTTPS"
	case famNLB:
		return "TCP/TLS/UDP/TCP_UDP"
	default:
		return "lambda"
	}
}

// Attributes are a group's attributes parsed into the values the runtime uses.
type Attributes struct {
	DeregistrationDelay       time.Duration
	ConnectionTermination     bool
	Algorithm                 string
	AnomalyMitigation         bool
	CrossZone                 string
	SlowStart                 time.Duration
	StickinessEnabled         bool
	StickinessType            string
	LBCookieDuration          time.Duration
	LBCookieName              string
	AppCookieName             string
	AppCookieDuration         time.Duration
	PreserveClientIP          bool
	ProxyProtocolV2           bool
	DNSFailoverCount          int // 0 = off
	DNSFailoverPercentage     int // 0 = off
	RoutingFailoverCount      int
	RoutingFailoverPercentage int // 0 = off
	UnhealthyConnTermination  bool
	UnhealthyDrainingInterval time.Duration
	LambdaMultiValueHeaders   bool
}

// effectiveAttributes merges the given attributes over the defaults of the
// group's family, after checking every key and value. c must be normalised.
func effectiveAttributes(c *GroupConfig, given map[string]string) (map[string]string, error) {
	fam := familyOf(c)
	out := make(map[string]string, len(attrDefs))
	for _, d := range attrDefs {
		if d.families&fam != 0 {
			out[d.key] = d.def(c)
		}
	}
	if c.Type == TypeALB {
		for _, k := range slices.Sorted(maps.Keys(given)) {
			if def, ok := out[k]; !ok || strings.TrimSpace(given[k]) != def {
				return nil, fieldErr("attributes."+k, "target groups of type alb always use the default attributes")
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(given)) {
		v := strings.TrimSpace(given[k])
		d, ok := attrDefFor(k)
		if !ok {
			return nil, keyErr("attributes", k, "unknown attribute key %q; allowed keys for %s groups: %s", k, fam, strings.Join(keysOf(fam), ", "))
		}
		if d.families&fam == 0 {
			return nil, fieldErr("attributes."+k, "not supported for %s groups; allowed keys: %s", fam, strings.Join(keysOf(fam), ", "))
		}
		if err := d.check(v); err != nil {
			return nil, fieldErr("attributes."+k, "%q: %v", v, err)
		}
		out[k] = v
	}
	return out, nil
}

func keysOf(f family) []string {
	var ks []string
	for _, d := range attrDefs {
		if d.families&f != 0 {
			ks = append(ks, d.key)
		}
	}
	return ks
}

// parseAttributes turns effective attributes into typed values and checks
// the rules that tie several attributes (and the protocol) together.
func parseAttributes(c *GroupConfig, m map[string]string) (Attributes, error) {
	a := Attributes{
		DeregistrationDelay:       seconds(m[AttrDeregistrationDelay]),
		ConnectionTermination:     m[AttrConnectionTermination] == "true",
		Algorithm:                 m[AttrAlgorithm],
		AnomalyMitigation:         m[AttrAnomalyMitigation] == "on",
		CrossZone:                 m[AttrCrossZone],
		SlowStart:                 seconds(m[AttrSlowStart]),
		StickinessEnabled:         m[AttrStickinessEnabled] == "true",
		StickinessType:            m[AttrStickinessType],
		LBCookieDuration:          seconds(m[AttrLBCookieDuration]),
		LBCookieName:              m[AttrLBCookieName],
		AppCookieName:             m[AttrAppCookieName],
		AppCookieDuration:         seconds(m[AttrAppCookieDuration]),
		PreserveClientIP:          m[AttrPreserveClientIP] == "true",
		ProxyProtocolV2:           m[AttrProxyProtocolV2] == "true",
		DNSFailoverCount:          atoiOff(m[AttrDNSFailoverCount]),
		DNSFailoverPercentage:     atoiOff(m[AttrDNSFailoverPercentage]),
		RoutingFailoverCount:      atoiOff(m[AttrRoutingFailoverCount]),
		RoutingFailoverPercentage: atoiOff(m[AttrRoutingFailoverPercentage]),
		UnhealthyConnTermination:  m[AttrUnhealthyConnTermination] != "false",
		UnhealthyDrainingInterval: seconds(m[AttrUnhealthyDrainingInterval]),
		LambdaMultiValueHeaders:   m[AttrLambdaMultiValueHeaders] == "true",
	}
	if a.Algorithm == "" {
		a.Algorithm = AlgorithmRoundRobin
	}
	if a.RoutingFailoverCount == 0 {
		// Every ELB target group fails open when none of its targets is
		// healthy; a lambda group has no unhealthy_state_routing attribute
		// to say so, and its one function keeps being invoked.
		a.RoutingFailoverCount = 1
	}
	fam := familyOf(c)
	if a.Algorithm == AlgorithmLeastOutstandingRequests && a.SlowStart > 0 {
		return a, fieldErr("attributes."+AttrAlgorithm, "least_outstanding_requests cannot be combined with slow start; set %s to 0 or use round_robin or weighted_random", AttrSlowStart)
	}
	if a.AnomalyMitigation && a.Algorithm != AlgorithmWeightedRandom {
		return a, fieldErr("attributes."+AttrAnomalyMitigation, "\"on\" requires %s weighted_random", AttrAlgorithm)
	}
	switch {
	case fam == famALB && a.StickinessType == StickinessSourceIP:
		return a, fieldErr("attributes."+AttrStickinessType, "source_ip is for TCP/TLS/UDP/TCP_UDP groups; HTTP/HTTPS groups allow lb_cookie or app_cookie")
	case fam == famNLB && a.StickinessType != StickinessSourceIP && a.StickinessType != "":
		return a, fieldErr("attributes."+AttrStickinessType, "%s is for HTTP/HTTPS groups; TCP/TLS/UDP/TCP_UDP groups allow source_ip", a.StickinessType)
	}
	if a.StickinessEnabled && a.StickinessType == StickinessAppCookie && a.AppCookieName == "" {
		return a, &ValidationError{Field: "attributes." + AttrAppCookieName, Cause: "attributes." + AttrStickinessType, Message: "required when stickiness.type is app_cookie"}
	}
	if fam == famNLB && !a.PreserveClientIP && (c.Protocol == ProtocolUDP || c.Protocol == ProtocolTCPUDP) {
		return a, fieldErr("attributes."+AttrPreserveClientIP, "client IP preservation can't be disabled for UDP and TCP_UDP groups")
	}
	if a.UnhealthyDrainingInterval > 0 && a.UnhealthyConnTermination {
		return a, fieldErr("attributes."+AttrUnhealthyDrainingInterval, "can only be set when %s is false", AttrUnhealthyConnTermination)
	}
	if a.DNSFailoverCount > 0 && a.DNSFailoverCount < a.RoutingFailoverCount {
		return a, fieldErr("attributes."+AttrDNSFailoverCount, "%d must be greater than or equal to the routing failover count %d", a.DNSFailoverCount, a.RoutingFailoverCount)
	}
	if a.DNSFailoverPercentage > 0 && a.RoutingFailoverPercentage > 0 && a.DNSFailoverPercentage < a.RoutingFailoverPercentage {
		return a, fieldErr("attributes."+AttrDNSFailoverPercentage, "%d must be greater than or equal to the routing failover percentage %d", a.DNSFailoverPercentage, a.RoutingFailoverPercentage)
	}
	return a, nil
}

func seconds(s string) time.Duration {
	n, _ := strconv.Atoi(s)
	return time.Duration(n) * time.Second
}

func atoiOff(s string) int {
	if s == "off" || s == "" {
		return 0
	}
	n, _ := strconv.Atoi(s)
	return n
}

func intIn(lo, hi int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("must be an integer within %d-%d", lo, hi)
		}
		return nil
	}
}

func offOrIntIn(lo, hi int) func(string) error {
	in := intIn(lo, hi)
	return func(v string) error {
		if v == "off" {
			return nil
		}
		if in(v) != nil {
			return fmt.Errorf("must be \"off\" or an integer within %d-%d", lo, hi)
		}
		return nil
	}
}

func oneOf(vals ...string) func(string) error {
	return func(v string) error {
		for _, ok := range vals {
			if v == ok {
				return nil
			}
		}
		return fmt.Errorf("must be one of %s", strings.Join(vals, ", "))
	}
}

var boolean = oneOf("true", "false")

func checkAppCookieName(v string) error {
	if v == "" {
		return nil
	}
	for _, p := range []string{"AWSALB", "AWSALBAPP", "AWSALBTG"} {
		if strings.HasPrefix(v, p) {
			return fmt.Errorf("the prefixes AWSALB, AWSALBAPP and AWSALBTG are reserved for the load balancer")
		}
	}
	return checkCookieName(v)
}

// checkCookieName requires an RFC 7230 token: net/http drops anything else.
func checkCookieName(v string) error {
	if v == "" || len(v) > 256 || (&http.Cookie{Name: v, Value: "x"}).Valid() != nil {
		return fmt.Errorf("must be a valid cookie name of at most 256 characters")
	}
	return nil
}
