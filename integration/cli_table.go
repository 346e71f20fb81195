package integration

import (
	"encoding/json"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// table is the table output of a command, drawn as the AWS CLI's: the
// operation's name as a title, then a header and aligned columns, in boxes.
// Without a header, it is a list of settings, a name and a value per row.
type table struct {
	title  string
	header []string
	rows   [][]string
}

// write draws the table:
//
//	------------------------------------
//	|       DescribeTargetHealth       |
//	+------------+-------+-------------+
//	|     Id     | Port  |    State    |
//	+------------+-------+-------------+
//	|  127.0.0.1 |  9001 |  healthy    |
//	+------------+-------+-------------+
func (t table) write(w io.Writer) {
	cols := len(t.header)
	for _, r := range t.rows {
		cols = max(cols, len(r))
	}
	widths := make([]int, cols)
	for i, h := range t.header {
		widths[i] = utf8.RuneCountInString(h) + 2
	}
	for _, r := range t.rows {
		for i, v := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(v)+3)
		}
	}
	if cols == 0 {
		widths = []int{0}
	}
	inner := len(widths) - 1
	for _, wd := range widths {
		inner += wd
	}
	if n := utf8.RuneCountInString(t.title) + 4; n > inner {
		widths[len(widths)-1] += n - inner
		inner = n
	}
	var b strings.Builder
	border := func() {
		b.WriteByte('+')
		for _, wd := range widths {
			b.WriteString(strings.Repeat("-", wd) + "+")
		}
		b.WriteByte('\n')
	}
	b.WriteString(strings.Repeat("-", inner+2) + "\n")
	b.WriteString("|" + center(t.title, inner) + "|\n")
	border()
	if len(t.header) > 0 {
		b.WriteByte('|')
		for i, wd := range widths {
			h := ""
			if i < len(t.header) {
				h = t.header[i]
			}
			b.WriteString(center(h, wd) + "|")
		}
		b.WriteByte('\n')
		border()
	}
	for _, r := range t.rows {
		b.WriteByte('|')
		for i, wd := range widths {
			v := ""
			if i < len(r) {
				v = r[i]
			}
			b.WriteString("  " + v + strings.Repeat(" ", wd-2-utf8.RuneCountInString(v)) + "|")
		}
		b.WriteByte('\n')
	}
	if len(t.rows) > 0 {
		border()
	}
	_, _ = io.WriteString(w, b.String())
}

func center(s string, width int) string {
	pad := width - utf8.RuneCountInString(s)
	if pad <= 0 {
		return s
	}
	return strings.Repeat(" ", pad/2) + s + strings.Repeat(" ", pad-pad/2)
}

// cliGroup is what the tables show of a group of the admin API.
type cliGroup struct {
	Name            string `json:"name"`
	ID              string `json:"id"`
	ARN             string `json:"arn"`
	Status          string `json:"status"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Protocol        string `json:"protocol"`
	ProtocolVersion string `json:"protocol_version"`
	Port            int    `json:"port"`
	IPAddressType   string `json:"ip_address_type"`
	HealthCheck     struct {
		Enabled            *bool           `json:"enabled"`
		Protocol           string          `json:"protocol"`
		Port               json.RawMessage `json:"port"`
		Path               string          `json:"path"`
		Interval           string          `json:"interval"`
		Timeout            string          `json:"timeout"`
		HealthyThreshold   int             `json:"healthy_threshold"`
		UnhealthyThreshold int             `json:"unhealthy_threshold"`
		Matcher            struct {
			HTTPCode string `json:"http_code"`
			GRPCCode string `json:"grpc_code"`
		} `json:"matcher"`
	} `json:"health_check"`
	Targets []json.RawMessage `json:"targets"`
}

func (g *cliGroup) protocol() string {
	if g.ProtocolVersion != "" && g.ProtocolVersion != "HTTP1" {
		return g.Protocol + "/" + g.ProtocolVersion
	}
	return g.Protocol
}

func (g *cliGroup) enabled() bool { return g.HealthCheck.Enabled == nil || *g.HealthCheck.Enabled }

// healthCheckPort is "traffic-port" or the port number.
func (g *cliGroup) healthCheckPort() string {
	var s string
	if json.Unmarshal(g.HealthCheck.Port, &s) == nil {
		return s
	}
	return strings.TrimSpace(string(g.HealthCheck.Port))
}

// healthCheckSummary is "HTTP /health", "TCP", "HTTP:8081 /health" or
// "disabled".
func (g *cliGroup) healthCheckSummary() string {
	if !g.enabled() {
		return "disabled"
	}
	s := g.HealthCheck.Protocol
	if p := g.healthCheckPort(); p != "" && p != "traffic-port" {
		s += ":" + p
	}
	if g.HealthCheck.Path != "" {
		s += " " + g.HealthCheck.Path
	}
	return s
}

func (g *cliGroup) matcher() string {
	switch m := g.HealthCheck.Matcher; {
	case m.GRPCCode != "":
		return "GrpcCode=" + m.GRPCCode
	case m.HTTPCode != "":
		return "HttpCode=" + m.HTTPCode
	}
	return ""
}

func portText(p int) string {
	if p == 0 {
		return ""
	}
	return strconv.Itoa(p)
}

// seconds writes a duration of the API ("30s") as the AWS CLI's seconds.
func seconds(d string) string { return strings.TrimSuffix(d, "s") }

// printGroup prints one group, the answer of CreateTargetGroup and
// ModifyTargetGroup: every setting, as AWS names it.
func (c *cliCall) printGroup(op string, raw []byte) error {
	if c.output == "json" {
		return c.printRaw(raw)
	}
	var g cliGroup
	if err := json.Unmarshal(raw, &g); err != nil {
		return badAnswer(err)
	}
	t := table{title: op, rows: [][]string{
		{"TargetGroupName", g.Name},
		{"Id", g.ID},
		{"TargetGroupArn", g.ARN},
		{"Protocol", g.Protocol},
		{"ProtocolVersion", g.ProtocolVersion},
		{"Port", portText(g.Port)},
		{"TargetType", g.Type},
		{"IpAddressType", g.IPAddressType},
		{"HealthCheckEnabled", strconv.FormatBool(g.enabled())},
		{"HealthCheckProtocol", g.HealthCheck.Protocol},
		{"HealthCheckPort", g.healthCheckPort()},
		{"HealthCheckPath", g.HealthCheck.Path},
		{"HealthCheckIntervalSeconds", seconds(g.HealthCheck.Interval)},
		{"HealthCheckTimeoutSeconds", seconds(g.HealthCheck.Timeout)},
		{"HealthyThresholdCount", strconv.Itoa(g.HealthCheck.HealthyThreshold)},
		{"UnhealthyThresholdCount", strconv.Itoa(g.HealthCheck.UnhealthyThreshold)},
		{"Matcher", g.matcher()},
		{"Targets", strconv.Itoa(len(g.Targets))},
		{"Source", g.Source},
	}}
	t.write(c.out)
	return nil
}

// printAttributes prints {"attributes":{…}} as a table of keys and values.
func (c *cliCall) printAttributes(op string, raw []byte) error {
	if c.output == "json" {
		return c.printRaw(raw)
	}
	var a struct {
		Attributes map[string]string `json:"attributes"`
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return badAnswer(err)
	}
	t := table{title: op, header: []string{"Key", "Value"}}
	for _, k := range slices.Sorted(maps.Keys(a.Attributes)) {
		t.rows = append(t.rows, []string{k, a.Attributes[k]})
	}
	t.write(c.out)
	return nil
}

// decodeHealth reads the targets of a DescribeTargetHealth answer.
func decodeHealth(raw []byte) ([]targetgroup.TargetHealthDescription, error) {
	var h struct {
		Targets []targetgroup.TargetHealthDescription `json:"targets"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, badAnswer(err)
	}
	return h.Targets, nil
}

// printHealth prints {"targets":[…]}, the answer of DescribeTargetHealth,
// RegisterTargets and DeregisterTargets.
func (c *cliCall) printHealth(op string, raw []byte) error {
	if c.output == "json" {
		return c.printRaw(raw)
	}
	ts, err := decodeHealth(raw)
	if err != nil {
		return err
	}
	t := table{title: op, header: []string{"Id", "Port", "AvailabilityZone", "State", "Reason", "InFlight", "Description"}}
	for _, h := range ts {
		t.rows = append(t.rows, []string{h.Target.ID, portText(h.Target.Port), h.Target.AvailabilityZone, string(h.TargetHealth.State), h.TargetHealth.Reason, strconv.FormatInt(h.InFlight, 10), h.TargetHealth.Description})
	}
	t.write(c.out)
	return nil
}
