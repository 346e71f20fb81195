package adminapi

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// The answers' shapes, as the model names their members. Lists are
// <Name><member>…</member></Name>, sent empty rather than left out, so
// that the CLI prints [] where AWS's answers have [] too. Absent scalars
// are left out.

type elbv2List[T any] struct {
	Member []T `xml:"member"`
}

func listOf[T any](items []T) elbv2List[T] { return elbv2List[T]{Member: items} }

type elbv2TargetGroup struct {
	TargetGroupArn             string
	TargetGroupName            string
	Protocol                   string `xml:",omitempty"`
	Port                       int    `xml:",omitempty"`
	VpcId                      string `xml:",omitempty"`
	HealthCheckProtocol        string `xml:",omitempty"`
	HealthCheckPort            string `xml:",omitempty"`
	HealthCheckEnabled         bool
	HealthCheckIntervalSeconds int           `xml:",omitempty"`
	HealthCheckTimeoutSeconds  int           `xml:",omitempty"`
	HealthyThresholdCount      int           `xml:",omitempty"`
	UnhealthyThresholdCount    int           `xml:",omitempty"`
	HealthCheckPath            string        `xml:",omitempty"`
	Matcher                    *elbv2Matcher `xml:",omitempty"`
	// Always empty: Caddy's routes use groups, but are no AWS resources.
	LoadBalancerArns elbv2List[string]
	TargetType       string
	ProtocolVersion  string `xml:",omitempty"`
	IpAddressType    string `xml:",omitempty"`
}

type elbv2Matcher struct {
	HttpCode string `xml:",omitempty"`
	GrpcCode string `xml:",omitempty"`
}

type elbv2Groups struct {
	TargetGroups elbv2List[elbv2TargetGroup]
	NextMarker   string `xml:",omitempty"`
}

type elbv2Target struct {
	Id               string
	Port             int    `xml:",omitempty"`
	AvailabilityZone string `xml:",omitempty"`
}

type elbv2TargetHealthDescription struct {
	Target                 elbv2Target
	HealthCheckPort        string `xml:",omitempty"`
	TargetHealth           elbv2TargetHealth
	AnomalyDetection       *elbv2Anomaly  `xml:",omitempty"`
	AdministrativeOverride *elbv2Override `xml:",omitempty"`
}

type elbv2TargetHealth struct {
	State       string
	Reason      string `xml:",omitempty"`
	Description string `xml:",omitempty"`
}

type elbv2Anomaly struct {
	Result             string
	MitigationInEffect string
}

type elbv2Override struct {
	State       string
	Reason      string
	Description string
}

type elbv2TargetHealthResult struct {
	TargetHealthDescriptions elbv2List[elbv2TargetHealthDescription]
}

type elbv2KeyValue struct {
	Key   string
	Value string
}

type elbv2Attributes struct {
	Attributes elbv2List[elbv2KeyValue]
}

type elbv2TagDescription struct {
	ResourceArn string
	Tags        elbv2List[elbv2KeyValue]
}

type elbv2TagsResult struct {
	TagDescriptions elbv2List[elbv2TagDescription]
}

// elbv2Empty is the result of the operations that answer nothing.
type elbv2Empty struct{}

// elbv2GroupOf is a group as ELBv2 describes it. Its durations are in
// whole seconds, rounded, as the JSON API and the config take finer ones.
func elbv2GroupOf(g *targetgroup.Group) elbv2TargetGroup {
	d := g.Describe()
	out := elbv2TargetGroup{
		TargetGroupArn:   d.ARN,
		TargetGroupName:  d.Name,
		Protocol:         d.Protocol,
		Port:             d.Port,
		VpcId:            d.VPCID,
		TargetType:       d.Type,
		ProtocolVersion:  d.ProtocolVersion,
		IpAddressType:    d.IPAddressType,
		LoadBalancerArns: listOf([]string{}),
	}
	if hc := d.HealthCheck; hc != nil {
		out.HealthCheckEnabled = hc.Enabled != nil && *hc.Enabled
		out.HealthCheckProtocol = hc.Protocol
		out.HealthCheckPort = hc.Port.String()
		out.HealthCheckPath = hc.Path
		out.HealthCheckIntervalSeconds = wholeSeconds(hc.Interval)
		out.HealthCheckTimeoutSeconds = wholeSeconds(hc.Timeout)
		out.HealthyThresholdCount = hc.HealthyThreshold
		out.UnhealthyThresholdCount = hc.UnhealthyThreshold
		if m := hc.Matcher; m != nil && (m.HTTPCode != "" || m.GRPCCode != "") {
			out.Matcher = &elbv2Matcher{HttpCode: m.HTTPCode, GrpcCode: m.GRPCCode}
		}
	}
	if d.Type == targetgroup.TypeLambda {
		// As AWS describes a lambda group: a function is invoked, on no
		// port and by no protocol of the group's choosing.
		out.HealthCheckProtocol, out.HealthCheckPort = "", ""
		if out.IpAddressType == "" {
			out.IpAddressType = targetgroup.IPv4
		}
	}
	return out
}

func wholeSeconds(d targetgroup.Duration) int {
	return int(math.Round(time.Duration(d).Seconds()))
}

// elbv2KeyValues lists a map sorted by key, as AWS lists attributes and
// tags.
func elbv2KeyValues(m map[string]string) elbv2List[elbv2KeyValue] {
	out := make([]elbv2KeyValue, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, elbv2KeyValue{Key: k, Value: m[k]})
	}
	return listOf(out)
}

// elbv2Names are the group JSON's field names and their ELBv2 parameter
// names, for the messages of the domain's validation errors.
var elbv2Names = map[string]string{
	"name":                             "Name",
	"type":                             "TargetType",
	"protocol":                         "Protocol",
	"protocol_version":                 "ProtocolVersion",
	"port":                             "Port",
	"ip_address_type":                  "IpAddressType",
	"vpc_id":                           "VpcId",
	"tags":                             "Tags",
	"attributes":                       "Attributes",
	"targets":                          "Targets",
	"health_check":                     "HealthCheck",
	"health_check.enabled":             "HealthCheckEnabled",
	"health_check.protocol":            "HealthCheckProtocol",
	"health_check.protocol_version":    "ProtocolVersion",
	"health_check.port":                "HealthCheckPort",
	"health_check.path":                "HealthCheckPath",
	"health_check.interval":            "HealthCheckIntervalSeconds",
	"health_check.timeout":             "HealthCheckTimeoutSeconds",
	"health_check.healthy_threshold":   "HealthyThresholdCount",
	"health_check.unhealthy_threshold": "UnhealthyThresholdCount",
	"health_check.matcher":             "Matcher",
	"health_check.matcher.http_code":   "Matcher.HttpCode",
	"health_check.matcher.grpc_code":   "Matcher.GrpcCode",
}

// elbv2TargetFields are TargetDescription's members by their JSON names.
var elbv2TargetFields = map[string]string{"id": "Id", "port": "Port", "availability_zone": "AvailabilityZone"}

// elbv2Field names a field of the group JSON as the ELBv2 request names it:
// health_check.interval is HealthCheckIntervalSeconds, targets[2].port is
// Targets.member.3.Port, attributes.<key> the attribute of that key.
func elbv2Field(field string) string {
	if n, ok := elbv2Names[field]; ok {
		return n
	}
	if rest, ok := strings.CutPrefix(field, "targets["); ok {
		num, sub, _ := strings.Cut(rest, "]")
		if i, err := strconv.Atoi(num); err == nil {
			sub = strings.TrimPrefix(sub, ".")
			if n, ok := elbv2TargetFields[sub]; ok || sub == "" {
				return memberName("Targets", i, n)
			}
			return memberName("Targets", i, sub)
		}
	}
	for _, list := range []string{"attributes", "tags"} {
		if key, ok := strings.CutPrefix(field, list+"."); ok {
			return fmt.Sprintf("%s (key %q)", elbv2Names[list], key)
		}
	}
	return field
}

// elbv2FieldMessage is a domain validation error's message with its field
// named as the request names it.
func elbv2FieldMessage(ve *targetgroup.ValidationError) string {
	head := ve.Field
	if ve.Label != "" {
		head = ve.Label
	}
	if head == "" {
		return ve.Message
	}
	return elbv2Field(head) + ": " + ve.Message
}
