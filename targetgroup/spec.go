package targetgroup

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/caddy-targetgroup/caddy-targetgroup/healthcheck"
)

// Target types.
const (
	TypeIP       = "ip"
	TypeInstance = "instance"
	TypeALB      = "alb"
	TypeLambda   = "lambda"
)

// Protocols and protocol versions.
const (
	ProtocolHTTP   = "HTTP"
	ProtocolHTTPS  = "HTTPS"
	ProtocolTCP    = "TCP"
	ProtocolTLS    = "TLS"
	ProtocolUDP    = "UDP"
	ProtocolTCPUDP = "TCP_UDP"

	VersionHTTP1 = "HTTP1"
	VersionHTTP2 = "HTTP2"
	VersionGRPC  = "GRPC"

	IPv4 = "ipv4"
	IPv6 = "ipv6"
)

// Spec is a validated group configuration with every default filled in, and
// the parsed values the runtime works with. A Spec is immutable.
type Spec struct {
	// Config is the effective configuration: what was given plus defaults,
	// with attributes listing every key of the group's family.
	Config      GroupConfig
	Attributes  Attributes
	HealthCheck HealthCheckSpec
}

// HealthCheckSpec is the resolved health check of a group.
type HealthCheckSpec struct {
	Enabled            bool
	Probe              healthcheck.Spec
	Port               int // 0: the target's own port
	Interval           time.Duration
	HealthyThreshold   int
	UnhealthyThreshold int
	// PassiveThreshold is 0 or the number of consecutive proxy errors that
	// make a healthy target unhealthy.
	PassiveThreshold int
}

// CrossZone reports whether a node routes to targets of every zone:
// load_balancing.cross_zone.enabled, where use_load_balancer_configuration
// means what the AWS load balancer does by default — on for HTTP/HTTPS
// groups (ALB), off for layer 4 groups (NLB).
func (s *Spec) CrossZone() bool {
	switch s.Attributes.CrossZone {
	case "true":
		return true
	case "false":
		return false
	}
	return !s.Layer4()
}

// Layer4 reports whether the group proxies TCP/TLS/UDP rather than HTTP.
func (s *Spec) Layer4() bool { return familyOf(&s.Config) == famNLB }

// NewSpec validates a group configuration and fills in its defaults. The
// given config is not modified. Targets are checked too, against allowed.
func NewSpec(c *GroupConfig, allowed []netip.Prefix) (*Spec, error) {
	cfg := c.Clone()
	if cfg == nil {
		cfg = &GroupConfig{}
	}
	if err := normalizeGroup(cfg); err != nil {
		return nil, err
	}
	hc, err := normalizeHealthCheck(cfg)
	if err != nil {
		return nil, err
	}
	if err := validateTags(cfg.Tags); err != nil {
		return nil, err
	}
	eff, err := effectiveAttributes(cfg, cfg.Attributes)
	if err != nil {
		return nil, err
	}
	attrs, err := parseAttributes(cfg, eff)
	if err != nil {
		return nil, err
	}
	cfg.Attributes = eff
	s := &Spec{Config: *cfg, Attributes: attrs, HealthCheck: hc}
	seen := make(map[TargetKey]bool, len(cfg.Targets))
	for i := range cfg.Targets {
		t, err := s.NormalizeTarget(cfg.Targets[i], allowed)
		if err != nil {
			return nil, prefixField(fmt.Sprintf("targets[%d]", i), err)
		}
		if seen[t.Key()] {
			return nil, fieldErr(fmt.Sprintf("targets[%d]", i), "%s is listed twice", t.Key())
		}
		seen[t.Key()] = true
		cfg.Targets[i] = t
	}
	if err := s.checkTargetCount(len(cfg.Targets)); err != nil {
		return nil, err
	}
	s.Config.Targets = cfg.Targets
	return s, nil
}
