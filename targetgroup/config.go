package targetgroup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// GroupConfig is a target group as the config and the admin API describe it.
// The same JSON is accepted in `apps.target_groups.groups.<name>` and in the
// body of `POST /target-groups/`. Empty fields take the defaults of the AWS
// documents (they depend on the protocol and the target type); NewSpec
// fills them in.
type GroupConfig struct {
	// How targets are named: `ip` (an IP literal, default), `instance` (a DNS
	// host name, resolved whenever it is dialed), `alb` (the host of another
	// HTTP load balancer; one target) or `lambda` (one function; no port).
	Type string `json:"type,omitempty"`

	// The protocol used to reach targets: HTTP (default), HTTPS, or for layer 4
	// groups TCP, TLS, UDP, TCP_UDP. HTTPS and TLS targets are reached over TLS
	// without verifying their certificates, as AWS load balancers do.
	Protocol string `json:"protocol,omitempty"`

	// HTTP1 (default), HTTP2 or GRPC. HTTP and HTTPS groups only.
	ProtocolVersion string `json:"protocol_version,omitempty"`

	// The port of targets registered without one. Default 80 for HTTP and 443
	// for HTTPS; required for layer 4 groups; not allowed for lambda.
	Port int `json:"port,omitempty"`

	// ipv4 (default) or ipv6. Every target's address must be of this type.
	IPAddressType string `json:"ip_address_type,omitempty"`

	// The VPC the group belongs to in AWS's terms ("vpc-" and 8 or 17 of
	// a-z 0-9). Caddy keeps and answers it, so that scripts written for
	// AWS round-trip, and routes nothing by it. Not for lambda groups.
	VPCID string `json:"vpc_id,omitempty"`

	// The event a lambda group's function receives: empty (default) for
	// ALB's event, V1 or V2 for VPC Lattice's event structure of that
	// version. Lambda groups only.
	LambdaEventStructureVersion string `json:"lambda_event_structure_version,omitempty"`

	// How targets are health-checked. Defaults depend on the protocol.
	HealthCheck *HealthCheckConfig `json:"health_check,omitempty"`

	// Target group attributes with their AWS keys and string values, e.g.
	// "deregistration_delay.timeout_seconds": "30".
	Attributes map[string]string `json:"attributes,omitempty"`

	// Targets registered with the group by the config.
	Targets []TargetConfig `json:"targets,omitempty"`

	// Free-form tags (AWS limits: 50 tags, keys 1–128 and values 0–256
	// characters, no "aws:" prefix).
	Tags map[string]string `json:"tags,omitempty"`
}

// HealthCheckConfig configures active health checks of a group's targets.
type HealthCheckConfig struct {
	// Whether targets are health-checked. Default true (false for lambda).
	// With health checks disabled every target is `unavailable` and gets traffic.
	Enabled *bool `json:"enabled,omitempty"`

	// HTTP, HTTPS or TCP. Default HTTP for HTTP/HTTPS groups and TCP for
	// layer 4 groups. HTTPS checks never verify the target's certificate.
	Protocol string `json:"protocol,omitempty"`

	// HTTP1, HTTP2 or GRPC. Default: the group's protocol version.
	ProtocolVersion string `json:"protocol_version,omitempty"`

	// "traffic-port" (default: the port each target receives traffic on) or a
	// fixed port number.
	Port HealthCheckPort `json:"port,omitzero"`

	// The request path of HTTP/HTTPS checks (default "/"), or the gRPC method
	// (default "/AWS.ALB/healthcheck").
	Path string `json:"path,omitempty"`

	// Time between two checks of one target, 5s–300s. Default 30s.
	Interval Duration `json:"interval,omitempty"`

	// Time after which a check without answer fails, 1s–120s and shorter than
	// the interval. Default 5s for HTTP groups; for layer 4 groups 10s for TCP
	// and HTTPS checks and 6s for HTTP checks.
	Timeout Duration `json:"timeout,omitempty"`

	// Consecutive passes that make an unhealthy target healthy, 2–10. Default 5.
	HealthyThreshold int `json:"healthy_threshold,omitempty"`

	// Consecutive failures that make a healthy target unhealthy, 2–10. Default 2.
	UnhealthyThreshold int `json:"unhealthy_threshold,omitempty"`

	// The codes that count as success.
	Matcher *MatcherConfig `json:"matcher,omitempty"`

	// Passive health, beyond AWS: this many consecutive failed proxied
	// requests (the target answered 502, 503 or 504, or could not be
	// reached) make a healthy target unhealthy at once, without waiting for
	// the next active check; active checks then bring it back. 0 (default)
	// turns it off; 1–100.
	PassiveUnhealthyThreshold int `json:"passive_unhealthy_threshold,omitempty"`
}

// MatcherConfig holds the success codes of a health check: exactly one of
// the two fields, with AWS's grammar ("200", "200,202", "200-299").
type MatcherConfig struct {
	// HTTP status codes within 200–599. Default "200" for HTTP/HTTPS groups
	// and "200-399" for layer 4 groups.
	HTTPCode string `json:"http_code,omitempty"`
	// gRPC status codes within 0–99. Default "12" for GRPC groups.
	GRPCCode string `json:"grpc_code,omitempty"`
}

// TargetConfig identifies a target as RegisterTargets does.
type TargetConfig struct {
	// The target: an IP literal (type ip), a host name (instance, alb) or a
	// function name or ARN (lambda).
	ID string `json:"id"`
	// The port traffic is sent to. 0 or absent: the group's port.
	Port int `json:"port,omitempty"`
	// A zone label (see the app's `zone` and load_balancing.cross_zone.enabled).
	AvailabilityZone string `json:"availability_zone,omitempty"`
	// The target's share under weighted_random, 1–1000 (default 1: equal).
	// Our addition; AWS weighs target groups, not targets.
	Weight int `json:"weight,omitempty"`
}

// Key returns the registry key of a target.
func (t TargetConfig) Key() TargetKey { return TargetKey{ID: t.ID, Port: t.Port} }

// TargetKey identifies a target within a group, as AWS does: (id, port).
type TargetKey struct {
	ID   string
	Port int
}

// Compare orders keys by id, then port, as the API lists targets.
func (k TargetKey) Compare(o TargetKey) int { return compareKeys(k.ID, k.Port, o.ID, o.Port) }

func (k TargetKey) String() string {
	if k.Port == 0 {
		return k.ID
	}
	return net.JoinHostPort(k.ID, strconv.Itoa(k.Port))
}

// TrafficPort is the health check port meaning "each target's own port".
const TrafficPort = "traffic-port"

// HealthCheckPort is "traffic-port" or a port number. It accepts a JSON
// string or number and answers "traffic-port" as a string and a port as a
// number.
type HealthCheckPort struct {
	// Port is 0 for traffic-port.
	Port int
	set  bool
}

// IsZero reports whether the port was left unset (for omitempty).
func (p HealthCheckPort) IsZero() bool { return !p.set && p.Port == 0 }

// String answers "traffic-port" or the port number.
func (p HealthCheckPort) String() string {
	if p.Port == 0 {
		return TrafficPort
	}
	return strconv.Itoa(p.Port)
}

// ParseHealthCheckPort reads "traffic-port" or a decimal port.
func ParseHealthCheckPort(s string) (HealthCheckPort, error) {
	if s == TrafficPort {
		return HealthCheckPort{set: true}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return HealthCheckPort{}, fmt.Errorf("health_check.port: %q must be \"traffic-port\" or a port within 1-65535", s)
	}
	return HealthCheckPort{Port: n, set: true}, nil
}

// MarshalJSON implements json.Marshaler.
func (p HealthCheckPort) MarshalJSON() ([]byte, error) {
	if p.Port == 0 {
		return json.Marshal(TrafficPort)
	}
	return json.Marshal(p.Port)
}

// UnmarshalJSON implements json.Unmarshaler.
func (p *HealthCheckPort) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := ParseHealthCheckPort(s)
		if err != nil {
			return err
		}
		*p = v
		return nil
	}
	var n int
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("health_check.port: must be \"traffic-port\" or a port number")
	}
	v, err := ParseHealthCheckPort(strconv.Itoa(n))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// Duration is a caddy.Duration that is answered as a string ("30s") so that
// the admin API and adapted configs read like the Caddyfile. It accepts
// strings in Caddy's duration syntax ("30s", "1d") and integer nanoseconds.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var cd caddy.Duration
	if err := cd.UnmarshalJSON(b); err != nil {
		return err
	}
	*d = Duration(cd)
	return nil
}

// String formats whole seconds as "30s" and anything else as Go does.
func (d Duration) String() string {
	td := time.Duration(d)
	if td%time.Second == 0 {
		return strconv.FormatInt(int64(td/time.Second), 10) + "s"
	}
	return td.String()
}

// Clone returns a deep copy, so that a caller may fill defaults without
// touching what it was given.
func (c *GroupConfig) Clone() *GroupConfig {
	if c == nil {
		return nil
	}
	out := *c
	if c.HealthCheck != nil {
		hc := *c.HealthCheck
		if hc.Enabled != nil {
			v := *hc.Enabled
			hc.Enabled = &v
		}
		if hc.Matcher != nil {
			m := *hc.Matcher
			hc.Matcher = &m
		}
		out.HealthCheck = &hc
	}
	out.Attributes = maps.Clone(c.Attributes)
	out.Tags = maps.Clone(c.Tags)
	out.Targets = slices.Clone(c.Targets)
	return &out
}

// upper normalises enum spellings so that "http" and "HTTP" are the same.
func upper(s string) string { return strings.ToUpper(strings.TrimSpace(s)) }
func lower(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
