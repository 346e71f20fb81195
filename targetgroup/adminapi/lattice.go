package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// VPC Lattice's REST-JSON dialect of the API, as the AWS SDKs' vpclattice
// clients speak it with their endpoint set to <admin>/vpc-lattice: the
// target-group operations of the 2022-11-30 model, their shapes and their
// errors. The rules are the domain's; this file routes and answers errors,
// lattice_groups.go holds the group operations, lattice_targets.go the
// target and tag operations.

// latticePrefix is where the dialect is mounted on the admin endpoint.
const latticePrefix = "/vpc-lattice"

// The error types of the Lattice model, sent in X-Amzn-ErrorType, by which
// the SDKs pick the typed error.
const (
	latticeValidation   = "ValidationException"
	latticeNotFound     = "ResourceNotFoundException"
	latticeConflict     = "ConflictException"
	latticeQuota        = "ServiceQuotaExceededException"
	latticeInternal     = "InternalServerException"
	latticeResourceType = "TARGET_GROUP"
)

// The reasons of a ValidationException, as the model enumerates them.
const (
	latticeReasonUnknownOp   = "unknownOperation"
	latticeReasonCannotParse = "cannotParse"
	latticeReasonField       = "fieldValidationFailed"
	latticeReasonOther       = "other"
)

// latticeRoutes are the operations, one per line. {id} is a target group
// identifier (an id or an ARN; a name too, beyond the model), {arn} a
// resource ARN.
var latticeRoutes = []latticeRoute{
	{http.MethodPost, "targetgroups", "CreateTargetGroup", createLatticeGroup},
	{http.MethodGet, "targetgroups", "ListTargetGroups", listLatticeGroups},
	{http.MethodGet, "targetgroups/{id}", "GetTargetGroup", getLatticeGroup},
	{http.MethodPatch, "targetgroups/{id}", "UpdateTargetGroup", updateLatticeGroup},
	{http.MethodDelete, "targetgroups/{id}", "DeleteTargetGroup", deleteLatticeGroup},
	{http.MethodPost, "targetgroups/{id}/registertargets", "RegisterTargets", registerLatticeTargets},
	{http.MethodPost, "targetgroups/{id}/deregistertargets", "DeregisterTargets", deregisterLatticeTargets},
	{http.MethodPost, "targetgroups/{id}/listtargets", "ListTargets", listLatticeTargets},
	{http.MethodPost, "tags/{arn}", "TagResource", tagLatticeResource},
	{http.MethodDelete, "tags/{arn}", "UntagResource", untagLatticeResource},
	{http.MethodGet, "tags/{arn}", "ListTagsForResource", listLatticeTags},
}

type latticeRoute struct {
	method, path, op string
	run              func(c *latticeCall) (int, any, error)
}

// latticeCall is one request: the live registry, and the identifier its
// path names (empty at /targetgroups).
type latticeCall struct {
	reg *targetgroup.Registry
	w   http.ResponseWriter
	r   *http.Request
	ref string
}

// serveLattice answers VPC Lattice's REST API under /vpc-lattice/.
func serveLattice(w http.ResponseWriter, r *http.Request) error {
	w.Header()["x-amzn-RequestId"] = []string{requestID()}
	status, body, err := dispatchLattice(w, r)
	if err != nil {
		writeLatticeError(w, latticeErrorOf(err))
		return nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(body)
}

func dispatchLattice(w http.ResponseWriter, r *http.Request) (int, any, error) {
	// The SDKs percent-encode an ARN in the path, its "/" as %2F: the
	// decoded path would split it, so segments are cut from the escaped
	// path and unescaped one by one.
	rest := strings.TrimPrefix(r.URL.EscapedPath(), latticePrefix+"/")
	rest = strings.TrimSuffix(rest, "/")
	segs := strings.Split(rest, "/")
	ref := ""
	if len(segs) >= 2 && (segs[0] == "targetgroups" || segs[0] == "tags") {
		v, err := url.PathUnescape(segs[1])
		if err != nil || v == "" {
			return 0, nil, &latticeError{status: http.StatusBadRequest, typ: latticeValidation, reason: latticeReasonCannotParse,
				message: fmt.Sprintf("the identifier %q in the path is not a valid percent-encoded segment", segs[1])}
		}
		ref = v
		segs[1] = "{id}"
		if segs[0] == "tags" {
			segs[1] = "{arn}"
		}
	}
	path := strings.Join(segs, "/")
	var ops []string
	for _, rt := range latticeRoutes {
		if rt.path != path {
			continue
		}
		if rt.method == r.Method {
			reg := targetgroup.Current()
			if reg == nil {
				return 0, nil, &latticeError{status: http.StatusServiceUnavailable, typ: latticeInternal, retryAfter: 5,
					message: "the target_groups app is not running: declare target groups in the config (apps.target_groups, or the target_groups global option)"}
			}
			return rt.run(&latticeCall{reg: reg, w: w, r: r, ref: ref})
		}
		ops = append(ops, rt.method+" ("+rt.op+")")
	}
	msg := fmt.Sprintf("%s %s is no VPC Lattice target group operation; the operations are CreateTargetGroup, ListTargetGroups, GetTargetGroup, UpdateTargetGroup, DeleteTargetGroup, RegisterTargets, DeregisterTargets, ListTargets, TagResource, UntagResource and ListTagsForResource", r.Method, r.URL.EscapedPath())
	if len(ops) > 0 {
		msg = fmt.Sprintf("%s %s: this path takes %s", r.Method, r.URL.EscapedPath(), strings.Join(ops, ", "))
	}
	return 0, nil, &latticeError{status: http.StatusBadRequest, typ: latticeValidation, reason: latticeReasonUnknownOp, message: msg}
}

// group resolves the call's identifier to a live group.
func (c *latticeCall) group() (*targetgroup.Group, error) {
	g, err := c.reg.Lookup(c.ref)
	if err != nil {
		return nil, latticeGroupNotFound(c.ref)
	}
	return g, nil
}

// decode reads the JSON body strictly (decodeBody); an empty body is an
// empty object when optional, as the SDKs send none for a call without
// body members.
func (c *latticeCall) decode(v any, optional bool) error {
	raw, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, maxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &latticeError{status: http.StatusRequestEntityTooLarge, typ: latticeValidation, reason: latticeReasonOther,
			message: fmt.Sprintf("the request body exceeds %d bytes", maxBodyBytes)}
	}
	if optional && len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	c.r.Body = io.NopCloser(bytes.NewReader(raw))
	if err := decodeBody(c.w, c.r, v); err != nil {
		var ve *targetgroup.ValidationError
		if errors.As(err, &ve) {
			// The body's own spelling: duplicate keys are named by their
			// path in it, decoding errors by the decoder's message.
			f := ve.Field
			if f == "body" {
				f = latticeBodyField(ve.Message)
			}
			return &latticeError{status: http.StatusBadRequest, typ: latticeValidation, reason: latticeReasonCannotParse,
				message: ve.Error(), fields: []latticeField{{Name: f, Message: ve.Message}}}
		}
		return err
	}
	return nil
}

// latticeBodyField names the member a decoding error is about, where the
// decoder's message says ("json: unknown field \"x\"", "... Go struct field
// T.config.port of type int").
func latticeBodyField(msg string) string {
	if _, after, ok := strings.Cut(msg, `unknown field "`); ok {
		return strings.TrimSuffix(after, `"`)
	}
	if _, after, ok := strings.Cut(msg, "Go struct field "); ok {
		name, _, _ := strings.Cut(after, " ")
		if _, path, ok := strings.Cut(name, "."); ok {
			return path
		}
		return name
	}
	return "body"
}

// latticeField is one entry of a ValidationException's fieldList.
type latticeField struct {
	Name    string `json:"name"`
	Message string `json:"message"`
}

// latticeError is an error answer: its status, type and body members.
type latticeError struct {
	status     int
	typ        string
	message    string
	reason     string         // ValidationException
	fields     []latticeField // ValidationException
	resourceID string         // not found, conflict, quota
	quotaCode  string         // ServiceQuotaExceededException
	retryAfter int            // seconds; InternalServerException
}

func (e *latticeError) Error() string { return e.typ + ": " + e.message }

// latticeErrorOf answers any error of a call: its own, or the domain's by
// kind. A domain validation error names the domain's field; the
// operations rename it (latticeFields) before it gets here.
func latticeErrorOf(err error) *latticeError {
	var le *latticeError
	if errors.As(err, &le) {
		return le
	}
	var he *httpError
	if errors.As(err, &he) {
		return &latticeError{status: he.status, typ: latticeValidation, reason: latticeReasonOther, message: he.message}
	}
	message := err.Error()
	var de *targetgroup.Error
	if errors.As(err, &de) {
		message = de.Message
	}
	switch targetgroup.KindOf(err) {
	case targetgroup.KindValidation:
		var ve *targetgroup.ValidationError
		errors.As(err, &ve)
		return &latticeError{status: http.StatusBadRequest, typ: latticeValidation, reason: latticeReasonField,
			message: ve.Error(), fields: []latticeField{{Name: ve.Field, Message: ve.Message}}}
	case targetgroup.KindNotFound:
		return &latticeError{status: http.StatusNotFound, typ: latticeNotFound, message: message}
	case targetgroup.KindConflict, targetgroup.KindDuplicateName, targetgroup.KindInUse, targetgroup.KindNotPermitted:
		return &latticeError{status: http.StatusConflict, typ: latticeConflict, message: message}
	case targetgroup.KindQuota:
		// 402, as the model has it (ELBv2 answers its quotas with 400).
		return &latticeError{status: http.StatusPaymentRequired, typ: latticeQuota, message: message}
	case targetgroup.KindStorageUnavailable:
		// The storage is ours, not the caller's rate: an
		// InternalServerException, whose model carries Retry-After, and
		// 503, which every SDK retries; nothing was changed, so a retry
		// is safe. ThrottlingException would tell the caller to slow down.
		return &latticeError{status: http.StatusServiceUnavailable, typ: latticeInternal, message: message, retryAfter: 1}
	default:
		return &latticeError{status: http.StatusInternalServerError, typ: latticeInternal, message: message}
	}
}

// latticeWithResource names the resource a not-found, conflict or quota error is
// about, which the model requires of them.
func latticeWithResource(err error, id string) error {
	le := latticeErrorOf(err)
	switch le.typ {
	case latticeNotFound, latticeConflict, latticeQuota:
		if le.resourceID == "" {
			le.resourceID = id
		}
	}
	return le
}

func latticeGroupNotFound(ref string) error {
	return &latticeError{status: http.StatusNotFound, typ: latticeNotFound, resourceID: ref,
		message: fmt.Sprintf("target group %q not found: give its id (tg-…), its ARN or its name", ref)}
}

func writeLatticeError(w http.ResponseWriter, e *latticeError) {
	body := map[string]any{"message": e.message}
	switch e.typ {
	case latticeValidation:
		body["reason"] = e.reason
		if len(e.fields) > 0 {
			body["fieldList"] = e.fields
		}
	case latticeNotFound, latticeConflict:
		body["resourceId"] = e.resourceID
		body["resourceType"] = latticeResourceType
	case latticeQuota:
		if e.resourceID != "" {
			body["resourceId"] = e.resourceID
		}
		body["resourceType"] = latticeResourceType
		body["serviceCode"] = "vpc-lattice"
		body["quotaCode"] = e.quotaCode
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(e.retryAfter))
	}
	w.Header()["X-Amzn-ErrorType"] = []string{e.typ}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(body)
}

// latticeInvalid is a ValidationException listing every field found wrong.
func latticeInvalid(fields []latticeField) error {
	msgs := make([]string, len(fields))
	for i, f := range fields {
		msgs[i] = f.Name + ": " + f.Message
	}
	return &latticeError{status: http.StatusBadRequest, typ: latticeValidation, reason: latticeReasonField,
		message: strings.Join(msgs, "; "), fields: fields}
}

// latticeChecks collects the field errors of a request, so that one answer names
// every wrong field.
type latticeChecks []latticeField

func (cs *latticeChecks) add(field, format string, args ...any) {
	*cs = append(*cs, latticeField{Name: field, Message: fmt.Sprintf(format, args...)})
}

func (cs latticeChecks) err() error {
	if len(cs) == 0 {
		return nil
	}
	return latticeInvalid(cs)
}

// oneOf checks an enum member: empty (absent) or one of allowed.
func (cs *latticeChecks) oneOf(field, v string, allowed ...string) {
	if v == "" {
		return
	}
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	cs.add(field, "%q must be one of %s", v, strings.Join(allowed, ", "))
}

// within checks an integer member given, against its range.
func (cs *latticeChecks) within(field string, v *int, lo, hi int) {
	if v != nil && (*v < lo || *v > hi) {
		cs.add(field, "%d is outside %d-%d", *v, lo, hi)
	}
}

// latticeFields renames the field of a domain validation error from the
// domain's names (the group JSON's) to the request's Lattice names; under
// is the path of the group's settings in the request ("config." in
// CreateTargetGroup, "" in UpdateTargetGroup).
func latticeFields(err error, under string) error {
	var ve *targetgroup.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	name := latticeFieldName(ve.Field, under)
	return &latticeError{status: http.StatusBadRequest, typ: latticeValidation, reason: latticeReasonField,
		message: name + ": " + ve.Message, fields: []latticeField{{Name: name, Message: ve.Message}}}
}

// latticeDomainNames are the group JSON's field names and their Lattice names.
var latticeDomainNames = map[string]string{
	"protocol":                         "protocol",
	"protocol_version":                 "protocolVersion",
	"port":                             "port",
	"ip_address_type":                  "ipAddressType",
	"vpc_id":                           "vpcIdentifier",
	"lambda_event_structure_version":   "lambdaEventStructureVersion",
	"health_check":                     "healthCheck",
	"health_check.enabled":             "healthCheck.enabled",
	"health_check.protocol":            "healthCheck.protocol",
	"health_check.protocol_version":    "healthCheck.protocolVersion",
	"health_check.port":                "healthCheck.port",
	"health_check.path":                "healthCheck.path",
	"health_check.interval":            "healthCheck.healthCheckIntervalSeconds",
	"health_check.timeout":             "healthCheck.healthCheckTimeoutSeconds",
	"health_check.healthy_threshold":   "healthCheck.healthyThresholdCount",
	"health_check.unhealthy_threshold": "healthCheck.unhealthyThresholdCount",
	"health_check.matcher":             "healthCheck.matcher",
	"health_check.matcher.http_code":   "healthCheck.matcher.httpCode",
	"health_check.matcher.grpc_code":   "healthCheck.matcher",
}

func latticeFieldName(field, under string) string {
	switch {
	case field == "name", field == "type", field == "tags", strings.HasPrefix(field, "tags."), strings.HasPrefix(field, "targets"):
		return field
	case field == "client_token":
		return "clientToken"
	}
	if n, ok := latticeDomainNames[field]; ok {
		return under + n
	}
	return under + field
}
