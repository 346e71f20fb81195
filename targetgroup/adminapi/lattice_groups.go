package adminapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// The target group operations of the Lattice dialect and their shapes.

// latticeConfig is the model's TargetGroupConfig, in requests and answers.
type latticeConfig struct {
	Port                        *int                `json:"port,omitempty"`
	Protocol                    string              `json:"protocol,omitempty"`
	ProtocolVersion             string              `json:"protocolVersion,omitempty"`
	IPAddressType               string              `json:"ipAddressType,omitempty"`
	VPCIdentifier               string              `json:"vpcIdentifier,omitempty"`
	HealthCheck                 *latticeHealthCheck `json:"healthCheck,omitempty"`
	LambdaEventStructureVersion string              `json:"lambdaEventStructureVersion,omitempty"`
}

// latticeHealthCheck is the model's HealthCheckConfig. Pointers tell a
// member given from one left out, which UpdateTargetGroup keeps.
type latticeHealthCheck struct {
	Enabled                    *bool           `json:"enabled,omitempty"`
	Protocol                   string          `json:"protocol,omitempty"`
	ProtocolVersion            string          `json:"protocolVersion,omitempty"`
	Port                       *int            `json:"port,omitempty"`
	Path                       *string         `json:"path,omitempty"`
	HealthCheckIntervalSeconds *int            `json:"healthCheckIntervalSeconds,omitempty"`
	HealthCheckTimeoutSeconds  *int            `json:"healthCheckTimeoutSeconds,omitempty"`
	HealthyThresholdCount      *int            `json:"healthyThresholdCount,omitempty"`
	UnhealthyThresholdCount    *int            `json:"unhealthyThresholdCount,omitempty"`
	Matcher                    *latticeMatcher `json:"matcher,omitempty"`
}

// latticeMatcher is the model's Matcher union, of one member.
type latticeMatcher struct {
	HTTPCode *string `json:"httpCode,omitempty"`
}

type latticeCreateRequest struct {
	Name        string            `json:"name"`
	Type        string            `json:"type"`
	Config      *latticeConfig    `json:"config"`
	ClientToken string            `json:"clientToken"`
	Tags        map[string]string `json:"tags"`
}

// latticeGroup answers CreateTargetGroup, GetTargetGroup and
// UpdateTargetGroup; the times and service ARNs are GetTargetGroup's.
type latticeGroup struct {
	ID            string        `json:"id"`
	ARN           string        `json:"arn"`
	Name          string        `json:"name"`
	Type          string        `json:"type"`
	Config        latticeConfig `json:"config"`
	CreatedAt     string        `json:"createdAt,omitempty"`
	LastUpdatedAt string        `json:"lastUpdatedAt,omitempty"`
	Status        string        `json:"status"`
	ServiceARNs   *[]string     `json:"serviceArns,omitempty"`
}

// latticeGroupSummary is an item of ListTargetGroups.
type latticeGroupSummary struct {
	ID                          string   `json:"id"`
	ARN                         string   `json:"arn"`
	Name                        string   `json:"name"`
	Type                        string   `json:"type"`
	CreatedAt                   string   `json:"createdAt"`
	LastUpdatedAt               string   `json:"lastUpdatedAt"`
	Port                        *int     `json:"port,omitempty"`
	Protocol                    string   `json:"protocol,omitempty"`
	IPAddressType               string   `json:"ipAddressType,omitempty"`
	VPCIdentifier               string   `json:"vpcIdentifier,omitempty"`
	Status                      string   `json:"status"`
	ServiceARNs                 []string `json:"serviceArns"`
	LambdaEventStructureVersion string   `json:"lambdaEventStructureVersion,omitempty"`
}

// Lattice's enums, and how the domain spells them.
var (
	latticeTypes     = []string{"IP", "LAMBDA", "INSTANCE", "ALB"}
	latticeProtocols = []string{targetgroup.ProtocolHTTP, targetgroup.ProtocolHTTPS, targetgroup.ProtocolTCP}
	latticeVersions  = []string{targetgroup.VersionHTTP1, targetgroup.VersionHTTP2, targetgroup.VersionGRPC}
)

const (
	latticeActive  = "ACTIVE"
	latticeDeleted = "DELETE_IN_PROGRESS"
	// The page size of the list operations when maxResults is absent.
	latticeDefaultPage = 100
)

func createLatticeGroup(c *latticeCall) (int, any, error) {
	var req latticeCreateRequest
	if err := c.decode(&req, false); err != nil {
		return 0, nil, err
	}
	cfg, err := req.groupConfig()
	if err != nil {
		return 0, nil, err
	}
	// Lattice's names are unique: an existing name is a conflict unless
	// this call's client token created it (a retry).
	creq := targetgroup.CreateRequest{Name: req.Name, ClientToken: req.ClientToken, GroupConfig: cfg, UniqueName: true}
	g, _, err := c.reg.CreateGroup(creq)
	if err != nil {
		if targetgroup.KindOf(err) == targetgroup.KindValidation {
			return 0, nil, latticeFields(err, "config.")
		}
		if targetgroup.KindOf(err) == targetgroup.KindConflict {
			err = &targetgroup.Error{Kind: targetgroup.KindConflict, Message: strings.Replace(err.Error(), "client_token", "clientToken", 1)}
		}
		ref := req.Name
		if existing := c.reg.Group(req.Name); existing != nil {
			ref = existing.ID()
		}
		return 0, nil, latticeWithResource(err, ref)
	}
	return http.StatusCreated, latticeGroupOf(g, false), nil
}

// groupConfig checks a creation against Lattice's model and the seed's
// rules, naming every wrong member, and makes it the domain's group JSON
// with Lattice's defaults; the domain then applies its own rules.
func (req *latticeCreateRequest) groupConfig() (targetgroup.GroupConfig, error) {
	var cs latticeChecks
	if req.Name == "" {
		cs.add("name", "required: 3-128 characters of a-z, 0-9 and hyphens")
	} else if err := targetgroup.ValidateName(req.Name); err != nil {
		// The domain checks it again; here so that the answer names it
		// beside the other wrong members.
		var ve *targetgroup.ValidationError
		if errors.As(err, &ve) {
			cs.add("name", "%s", ve.Message)
		}
	}
	switch {
	case req.Type == "":
		cs.add("type", "required: one of %s", strings.Join(latticeTypes, ", "))
	default:
		cs.oneOf("type", req.Type, latticeTypes...)
	}
	if t := req.ClientToken; len(t) > 64 || strings.ContainsFunc(t, func(c rune) bool { return c < '!' || c > '~' }) {
		cs.add("clientToken", "must be 1-64 printable ASCII characters without spaces")
	}
	cfg := req.Config
	if cfg == nil {
		cfg = &latticeConfig{}
	}
	out := targetgroup.GroupConfig{Type: strings.ToLower(req.Type), Tags: req.Tags}
	if req.Type == "LAMBDA" {
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"port", cfg.Port != nil}, {"protocol", cfg.Protocol != ""}, {"protocolVersion", cfg.ProtocolVersion != ""},
			{"ipAddressType", cfg.IPAddressType != ""}, {"vpcIdentifier", cfg.VPCIdentifier != ""}, {"healthCheck", cfg.HealthCheck != nil},
		} {
			if f.set {
				cs.add("config."+f.name, "not supported for target groups of type LAMBDA")
			}
		}
		cs.oneOf("config.lambdaEventStructureVersion", cfg.LambdaEventStructureVersion, "V1", "V2")
		// The model's default; the domain's empty version is ALB's event.
		out.LambdaEventStructureVersion = latticeOr(cfg.LambdaEventStructureVersion, "V1")
		return out, cs.err()
	}
	if cfg.LambdaEventStructureVersion != "" {
		cs.add("config.lambdaEventStructureVersion", "supported only for target groups of type LAMBDA")
	}
	cs.within("config.port", cfg.Port, 1, 65535)
	cs.oneOf("config.protocol", cfg.Protocol, latticeProtocols...)
	cs.oneOf("config.protocolVersion", cfg.ProtocolVersion, latticeVersions...)
	cs.oneOf("config.ipAddressType", cfg.IPAddressType, "IPV4", "IPV6")
	if cfg.IPAddressType != "" && req.Type != "IP" && req.Type != "" {
		cs.add("config.ipAddressType", "supported only for target groups of type IP")
	}
	if v := cfg.VPCIdentifier; v != "" && !targetgroup.ValidVPCID(v) {
		cs.add("config.vpcIdentifier", "%q must be vpc- and 8 or 17 characters of 0-9 and a-z", v)
	}
	if cfg.Port != nil {
		out.Port = *cfg.Port
	}
	out.Protocol, out.ProtocolVersion = cfg.Protocol, cfg.ProtocolVersion
	out.IPAddressType, out.VPCID = strings.ToLower(cfg.IPAddressType), cfg.VPCIdentifier
	hc := cfg.HealthCheck
	if req.Type == "ALB" {
		if hc != nil {
			cs.add("config.healthCheck", "not supported for target groups of type ALB: the load balancer checks its own targets")
		}
		// Lattice does not check an ALB target; with checks off it gets
		// traffic at once, as unavailable.
		off := false
		out.HealthCheck = &targetgroup.HealthCheckConfig{Enabled: &off}
		return out, cs.err()
	}
	if hc == nil {
		hc = &latticeHealthCheck{}
	}
	fields := latticeHealthFields(hc, "config.healthCheck.", &cs)
	if err := cs.err(); err != nil {
		return out, err
	}
	// Lattice's defaults, which differ from ELBv2's for layer 4 groups
	// and HTTP2 or GRPC groups; the domain fills in the rest. Checks are
	// on by default for HTTP1 groups only: off for HTTP2 and GRPC groups,
	// and off for TCP groups, which have no protocol version (VPC Lattice
	// User Guide, health checks and TLS listeners).
	version := latticeOr(cfg.ProtocolVersion, targetgroup.VersionHTTP1)
	defaults := map[string]any{
		"enabled": version == targetgroup.VersionHTTP1 && cfg.Protocol != targetgroup.ProtocolTCP, "protocol": targetgroup.ProtocolHTTP,
		"interval": "30s", "timeout": "5s", "healthy_threshold": 5, "unhealthy_threshold": 2,
		"matcher": map[string]string{"http_code": "200"},
	}
	if version == targetgroup.VersionGRPC || cfg.Protocol == targetgroup.ProtocolTCP {
		// No gRPC health checks: an HTTP one, as the seed says.
		defaults["protocol_version"] = targetgroup.VersionHTTP1
	}
	maps.Copy(defaults, fields)
	raw, _ := json.Marshal(defaults)
	var dhc targetgroup.HealthCheckConfig
	if err := json.Unmarshal(raw, &dhc); err != nil {
		return out, latticeFields(&targetgroup.ValidationError{Field: "health_check", Message: err.Error()}, "config.")
	}
	out.HealthCheck = &dhc
	return out, nil
}

// latticeHealthFields checks the members of a HealthCheckConfig and returns
// those given, by the group JSON's names; a 0 or empty member is the
// default (the model's ranges begin at 0).
func latticeHealthFields(hc *latticeHealthCheck, under string, cs *latticeChecks) map[string]any {
	out := map[string]any{}
	if hc.Enabled != nil {
		out["enabled"] = *hc.Enabled
	}
	switch hc.Protocol {
	case "":
	case targetgroup.ProtocolHTTP, targetgroup.ProtocolHTTPS:
		out["protocol"] = hc.Protocol
	default:
		cs.add(under+"protocol", "%q must be HTTP or HTTPS (VPC Lattice health checks are HTTP requests)", hc.Protocol)
	}
	cs.oneOf(under+"protocolVersion", hc.ProtocolVersion, targetgroup.VersionHTTP1, targetgroup.VersionHTTP2)
	if hc.ProtocolVersion != "" {
		out["protocol_version"] = hc.ProtocolVersion
	}
	cs.within(under+"port", hc.Port, 0, 65535)
	if hc.Port != nil {
		if *hc.Port == 0 {
			out["port"] = targetgroup.TrafficPort
		} else {
			out["port"] = *hc.Port
		}
	}
	if hc.Path != nil {
		out["path"] = latticeOr(*hc.Path, "/")
	}
	seconds := func(name, field string, v *int, lo, hi, def int) {
		switch {
		case v == nil:
		case *v == 0:
			out[field] = strconv.Itoa(def) + "s"
		case *v < lo || *v > hi:
			cs.add(under+name, "%d is outside %d-%d seconds", *v, lo, hi)
		default:
			out[field] = strconv.Itoa(*v) + "s"
		}
	}
	seconds("healthCheckIntervalSeconds", "interval", hc.HealthCheckIntervalSeconds, 5, 300, 30)
	seconds("healthCheckTimeoutSeconds", "timeout", hc.HealthCheckTimeoutSeconds, 1, 120, 5)
	count := func(name, field string, v *int, def int) {
		switch {
		case v == nil:
		case *v == 0:
			out[field] = def
		case *v < 2 || *v > 10:
			cs.add(under+name, "%d is outside 2-10", *v)
		default:
			out[field] = *v
		}
	}
	count("healthyThresholdCount", "healthy_threshold", hc.HealthyThresholdCount, 5)
	count("unhealthyThresholdCount", "unhealthy_threshold", hc.UnhealthyThresholdCount, 2)
	if m := hc.Matcher; m != nil {
		code := "200"
		if m.HTTPCode != nil && *m.HTTPCode != "" {
			code = *m.HTTPCode
		}
		out["matcher"] = map[string]string{"http_code": code}
	}
	return out
}

func getLatticeGroup(c *latticeCall) (int, any, error) {
	g, err := c.group()
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, latticeGroupOf(g, true), nil
}

func updateLatticeGroup(c *latticeCall) (int, any, error) {
	g, err := c.group()
	if err != nil {
		return 0, nil, err
	}
	var req struct {
		HealthCheck *latticeHealthCheck `json:"healthCheck"`
	}
	if err := c.decode(&req, false); err != nil {
		return 0, nil, err
	}
	var cs latticeChecks
	if req.HealthCheck == nil {
		cs.add("healthCheck", "required: the health check members to change")
		return 0, nil, cs.err()
	}
	if t := g.Spec().Config.Type; t == targetgroup.TypeLambda || t == targetgroup.TypeALB {
		cs.add("healthCheck", "not supported for target groups of type %s", strings.ToUpper(t))
	}
	fields := latticeHealthFields(req.HealthCheck, "healthCheck.", &cs)
	if err := cs.err(); err != nil {
		return 0, nil, err
	}
	patch, _ := json.Marshal(fields)
	if err := c.reg.ModifyHealthCheck(g.Name(), map[string]json.RawMessage{"health_check": patch}); err != nil {
		if targetgroup.KindOf(err) == targetgroup.KindValidation {
			return 0, nil, latticeFields(err, "")
		}
		return 0, nil, latticeWithResource(err, g.ID())
	}
	return http.StatusOK, latticeGroupOf(g, false), nil
}

func deleteLatticeGroup(c *latticeCall) (int, any, error) {
	g, err := c.reg.Lookup(c.ref)
	if err != nil {
		// The operation is idempotent in the model: deleting a deleted
		// group, named by the id or ARN a creation answered, succeeds. A
		// name that names nothing is more likely a mistake.
		if id, ok := latticeID(c.ref); ok {
			region, account := c.reg.Account()
			return http.StatusOK, map[string]string{"id": id, "arn": "arn:aws:vpc-lattice:" + region + ":" + account + ":targetgroup/" + id, "status": latticeDeleted}, nil
		}
		return 0, nil, latticeGroupNotFound(c.ref)
	}
	if err := c.reg.DeleteGroup(g.Name()); err != nil {
		return 0, nil, latticeWithResource(err, g.ID())
	}
	// The group is gone once this is answered; DELETE_IN_PROGRESS is the
	// model's status for a deletion accepted.
	return http.StatusOK, map[string]string{"id": g.ID(), "arn": g.LatticeARN(), "status": latticeDeleted}, nil
}

// latticeID returns the group id an identifier has the form of: a group id,
// or a Lattice target group ARN.
func latticeID(ref string) (string, bool) {
	id := ref
	if strings.HasPrefix(ref, "arn:") {
		parts := strings.SplitN(ref, ":", 6)
		if len(parts) != 6 || parts[2] != "vpc-lattice" {
			return "", false
		}
		var ok bool
		if id, ok = strings.CutPrefix(parts[5], "targetgroup/"); !ok {
			return "", false
		}
	}
	hex, ok := strings.CutPrefix(id, "tg-")
	if !ok || len(hex) != 17 || strings.ContainsFunc(hex, func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z') }) {
		return "", false
	}
	return id, true
}

func listLatticeGroups(c *latticeCall) (int, any, error) {
	q := c.r.URL.Query()
	var cs latticeChecks
	size := latticePageSize(q, &cs)
	typ := q.Get("targetGroupType")
	cs.oneOf("targetGroupType", typ, latticeTypes...)
	after, err := latticeAfter(q.Get("nextToken"))
	if err != nil {
		cs.add("nextToken", "%v", err)
	}
	vpc := q.Get("vpcIdentifier")
	if vpc != "" && !targetgroup.ValidVPCID(vpc) {
		cs.add("vpcIdentifier", "%q must be vpc- and 8 or 17 characters of 0-9 and a-z", vpc)
	}
	if err := cs.err(); err != nil {
		return 0, nil, err
	}
	items := []latticeGroupSummary{}
	next := ""
	for _, g := range c.reg.Groups() {
		if after != "" && g.Name() <= after {
			continue
		}
		d := g.Describe()
		if typ != "" && strings.ToUpper(d.Type) != typ || vpc != "" && d.VPCID != vpc {
			continue
		}
		if len(items) == size {
			next = pageToken(items[len(items)-1].Name)
			break
		}
		cfg := latticeConfigOf(d)
		created, updated := g.Times()
		items = append(items, latticeGroupSummary{
			ID: d.ID, ARN: g.LatticeARN(), Name: d.Name, Type: strings.ToUpper(d.Type),
			CreatedAt: latticeTime(created), LastUpdatedAt: latticeTime(updated),
			Port: cfg.Port, Protocol: cfg.Protocol, IPAddressType: cfg.IPAddressType, VPCIdentifier: cfg.VPCIdentifier,
			Status: latticeActive, ServiceARNs: []string{}, LambdaEventStructureVersion: cfg.LambdaEventStructureVersion,
		})
	}
	out := map[string]any{"items": items}
	if next != "" {
		out["nextToken"] = next
	}
	return http.StatusOK, out, nil
}

// latticePageSize reads maxResults, 1-100.
func latticePageSize(q map[string][]string, cs *latticeChecks) int {
	v := ""
	if vs := q["maxResults"]; len(vs) > 0 {
		v = vs[0]
	}
	if v == "" {
		return latticeDefaultPage
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 100 {
		cs.add("maxResults", "%q must be a number within 1-100", v)
		return latticeDefaultPage
	}
	return n
}

// A page token is the position after the last item of the page before,
// so that pages stay right while groups or targets come and go: a group's
// name or a target's key, as JSON in base64, so that a token this API did
// not answer is refused rather than read as some position.
func pageToken(after any) string {
	b, _ := json.Marshal(after)
	return base64.RawURLEncoding.EncodeToString(b)
}

// readPageToken reads tok into after; false if tok is no token of ours.
func readPageToken(tok string, after any) bool {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	return err == nil && len(tok) <= 2048 && json.Unmarshal(b, after) == nil
}

// latticeAfter is the group name a ListTargetGroups nextToken gives.
func latticeAfter(tok string) (string, error) {
	var after string
	if tok != "" && (!readPageToken(tok, &after) || after == "") {
		return "", errLatticeToken(tok)
	}
	return after, nil
}

func errLatticeToken(tok string) error {
	return fmt.Errorf("%q is not a nextToken of this API: pass the nextToken of the previous answer as it is", tok)
}

// latticeGroupOf is a group as CreateTargetGroup, UpdateTargetGroup and,
// with full, GetTargetGroup answer it.
func latticeGroupOf(g *targetgroup.Group, full bool) latticeGroup {
	d := g.Describe()
	out := latticeGroup{ID: d.ID, ARN: g.LatticeARN(), Name: d.Name, Type: strings.ToUpper(d.Type), Config: latticeConfigOf(d), Status: latticeActive}
	if full {
		created, updated := g.Times()
		out.CreatedAt, out.LastUpdatedAt = latticeTime(created), latticeTime(updated)
		// Caddy has no Lattice services; the routes that use a group are
		// in its config.
		out.ServiceARNs = &[]string{}
	}
	return out
}

// latticeConfigOf answers a group's settings in Lattice's names. A group
// of the config or the JSON API may have settings Lattice lacks (TLS or
// UDP protocols, ALB's lambda event): they are answered as they are, or
// left out where Lattice has no word for them.
func latticeConfigOf(d targetgroup.GroupDescription) latticeConfig {
	if d.Type == targetgroup.TypeLambda {
		return latticeConfig{LambdaEventStructureVersion: d.LambdaEventStructureVersion}
	}
	port := d.Port
	out := latticeConfig{Port: &port, Protocol: d.Protocol, ProtocolVersion: d.ProtocolVersion,
		IPAddressType: strings.ToUpper(d.IPAddressType), VPCIdentifier: d.VPCID}
	hc := d.HealthCheck
	if hc == nil || (d.Type == targetgroup.TypeALB && (hc.Enabled == nil || !*hc.Enabled)) {
		return out
	}
	lh := &latticeHealthCheck{Enabled: hc.Enabled, Protocol: hc.Protocol, ProtocolVersion: hc.ProtocolVersion,
		Path: latticeNonEmpty(hc.Path), HealthCheckIntervalSeconds: latticeSeconds(hc.Interval), HealthCheckTimeoutSeconds: latticeSeconds(hc.Timeout),
		HealthyThresholdCount: &hc.HealthyThreshold, UnhealthyThresholdCount: &hc.UnhealthyThreshold}
	if p := hc.Port.Port; p != 0 {
		lh.Port = &p
	}
	if m := hc.Matcher; m != nil && m.HTTPCode != "" {
		lh.Matcher = &latticeMatcher{HTTPCode: &m.HTTPCode}
	}
	out.HealthCheck = lh
	return out
}

func latticeSeconds(d targetgroup.Duration) *int {
	n := wholeSeconds(d)
	return &n
}

func latticeNonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// latticeTime is the model's iso8601 timestamp, in UTC to the millisecond.
func latticeTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func latticeOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
