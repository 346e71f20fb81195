package adminapi

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// ELBv2's dialect of the API: the AWS Query protocol of the 2015-12-01
// model, as aws-sdk-go-v2's elasticloadbalancingv2 client and `aws elbv2`
// speak it with their endpoint set to <admin>/elbv2. This file reads the
// envelope (method, content type, Action, Version), dispatches, and answers
// errors; elbv2_params.go decodes parameters, elbv2_groups.go,
// elbv2_targets.go and elbv2_tags.go hold the operations, elbv2_xml.go the
// answers' shapes.
//
// Requests are not authenticated: any SigV4 signature, or none, is
// accepted. The admin endpoint is the gate (loopback by default, Host and
// Origin checks, or remote admin with mTLS and per-path access control),
// as it is for every other admin route.

const (
	elbv2Version   = "2015-12-01"
	elbv2Namespace = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"
)

// elbv2Ops are the operations, by Action, with the parameters each takes
// (for the message that refuses an unknown one).
var elbv2Ops = map[string]elbv2Op{
	"CreateTargetGroup": {createELBv2Group, []string{"Name", "Protocol", "ProtocolVersion", "Port", "VpcId", "HealthCheckProtocol", "HealthCheckPort",
		"HealthCheckEnabled", "HealthCheckPath", "HealthCheckIntervalSeconds", "HealthCheckTimeoutSeconds", "HealthyThresholdCount",
		"UnhealthyThresholdCount", "Matcher.HttpCode", "Matcher.GrpcCode", "TargetType", "Tags", "IpAddressType"}},
	"DescribeTargetGroups": {describeELBv2Groups, []string{"LoadBalancerArn", "TargetGroupArns", "Names", "Marker", "PageSize"}},
	"ModifyTargetGroup": {modifyELBv2Group, []string{"TargetGroupArn", "HealthCheckProtocol", "HealthCheckPort", "HealthCheckPath", "HealthCheckEnabled",
		"HealthCheckIntervalSeconds", "HealthCheckTimeoutSeconds", "HealthyThresholdCount", "UnhealthyThresholdCount", "Matcher.HttpCode", "Matcher.GrpcCode"}},
	"DeleteTargetGroup":             {deleteELBv2Group, []string{"TargetGroupArn"}},
	"RegisterTargets":               {registerELBv2Targets, []string{"TargetGroupArn", "Targets"}},
	"DeregisterTargets":             {deregisterELBv2Targets, []string{"TargetGroupArn", "Targets"}},
	"DescribeTargetHealth":          {describeELBv2TargetHealth, []string{"TargetGroupArn", "Targets", "Include"}},
	"DescribeTargetGroupAttributes": {describeELBv2Attributes, []string{"TargetGroupArn"}},
	"ModifyTargetGroupAttributes":   {modifyELBv2Attributes, []string{"TargetGroupArn", "Attributes"}},
	"AddTags":                       {addELBv2Tags, []string{"ResourceArns", "Tags"}},
	"RemoveTags":                    {removeELBv2Tags, []string{"ResourceArns", "TagKeys"}},
	"DescribeTags":                  {describeELBv2Tags, []string{"ResourceArns"}},
}

type elbv2Op struct {
	run   func(c *elbv2Call) (any, error)
	takes []string
}

// elbv2Call is one request: the live registry and its parameters.
type elbv2Call struct {
	reg    *targetgroup.Registry
	p      *elbv2Params
	action string
	takes  []string
}

// The error codes this dialect answers beyond the model's exceptions, as
// AWS's Query services name them.
const (
	elbv2CodeValidation    = "ValidationError"
	elbv2CodeMissing       = "MissingParameter"
	elbv2CodeMissingAction = "MissingAction"
	elbv2CodeInvalidAction = "InvalidAction"
	elbv2CodeUnavailable   = "ServiceUnavailable"
	elbv2CodeInternal      = "InternalFailure"
	elbv2CodeTooLarge      = "RequestEntityTooLarge"
	elbv2CodeMethod        = "MethodNotAllowed"
)

// The model's exceptions, by their Query error codes.
const (
	elbv2CodeNotFound          = "TargetGroupNotFound"
	elbv2CodeDuplicateName     = "DuplicateTargetGroupName"
	elbv2CodeInvalidTarget     = "InvalidTarget"
	elbv2CodeInvalidConfig     = "InvalidConfigurationRequest"
	elbv2CodeInUse             = "ResourceInUse"
	elbv2CodeNotPermitted      = "OperationNotPermitted"
	elbv2CodeTooManyGroups     = "TooManyTargetGroups"
	elbv2CodeTooManyTargets    = "TooManyTargets"
	elbv2CodeTooManyTags       = "TooManyTags"
	elbv2CodeDuplicateTagKeys  = "DuplicateTagKeys"
	elbv2CodeLBNotFound        = "LoadBalancerNotFound"
	elbv2CodeListenerNotFound  = "ListenerNotFound"
	elbv2CodeRuleNotFound      = "RuleNotFound"
	elbv2CodeTrustStoreMissing = "TrustStoreNotFound"
)

// elbv2Kinds is how each kind of domain error is answered; the operations
// refine a few by what they were doing (elbv2Refine).
var elbv2Kinds = map[targetgroup.Kind]struct {
	status int
	code   string
}{
	targetgroup.KindInternal:      {http.StatusInternalServerError, elbv2CodeInternal},
	targetgroup.KindValidation:    {http.StatusBadRequest, elbv2CodeValidation},
	targetgroup.KindNotFound:      {http.StatusBadRequest, elbv2CodeNotFound},
	targetgroup.KindDuplicateName: {http.StatusBadRequest, elbv2CodeDuplicateName},
	// ELBv2 has no client tokens: what conflicts is a name.
	targetgroup.KindConflict: {http.StatusBadRequest, elbv2CodeDuplicateName},
	targetgroup.KindInUse:    {http.StatusBadRequest, elbv2CodeInUse},
	// The config owns the group, or the target.
	targetgroup.KindNotPermitted: {http.StatusBadRequest, elbv2CodeNotPermitted},
	// The operations name the quota they hit (TooManyTargets, …).
	targetgroup.KindQuota: {http.StatusBadRequest, elbv2CodeTooManyGroups},
	// Nothing was changed, and every SDK retries a 503.
	targetgroup.KindStorageUnavailable: {http.StatusServiceUnavailable, elbv2CodeUnavailable},
}

// elbv2Error is an error answer: its status, code and message.
type elbv2Error struct {
	status  int
	code    string
	message string
}

func (e *elbv2Error) Error() string { return e.code + ": " + e.message }

func elbv2Invalid(format string, args ...any) error {
	return &elbv2Error{http.StatusBadRequest, elbv2CodeValidation, fmt.Sprintf(format, args...)}
}

func elbv2Missing(name string) error {
	return &elbv2Error{http.StatusBadRequest, elbv2CodeMissing, fmt.Sprintf("the request must contain the parameter %s", name)}
}

func elbv2Fail(code, format string, args ...any) error {
	return &elbv2Error{http.StatusBadRequest, code, fmt.Sprintf(format, args...)}
}

// serveELBv2 answers ELBv2's Query API at /elbv2 and /elbv2/.
func serveELBv2(w http.ResponseWriter, r *http.Request) error {
	id := requestID()
	w.Header()["x-amzn-RequestId"] = []string{id}
	action, result, err := dispatchELBv2(w, r)
	if err != nil {
		writeELBv2Error(w, id, elbv2ErrorOf(err))
		return nil
	}
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(http.StatusOK)
	enc := xml.NewEncoder(w)
	root := xml.StartElement{Name: xml.Name{Local: action + "Response"}, Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: elbv2Namespace}}}
	_ = enc.EncodeToken(root)
	_ = enc.EncodeElement(result, xml.StartElement{Name: xml.Name{Local: action + "Result"}})
	_ = enc.EncodeElement(elbv2Metadata{RequestID: id}, xml.StartElement{Name: xml.Name{Local: "ResponseMetadata"}})
	_ = enc.EncodeToken(root.End())
	return enc.Flush()
}

type elbv2Metadata struct {
	RequestID string `xml:"RequestId"`
}

func dispatchELBv2(w http.ResponseWriter, r *http.Request) (string, any, error) {
	if p := r.URL.Path; p != "/elbv2" && p != "/elbv2/" {
		return "", nil, &elbv2Error{http.StatusNotFound, elbv2CodeInvalidAction,
			fmt.Sprintf("no such path %s: the ELBv2 API is served at /elbv2 itself (set the client's endpoint to <admin address>/elbv2)", p)}
	}
	raw, err := readELBv2Form(w, r)
	if err != nil {
		return "", nil, err
	}
	p, err := parseELBv2Params(raw)
	if err != nil {
		return "", nil, err
	}
	action, ok := p.str("Action")
	if !ok || action == "" {
		return "", nil, &elbv2Error{http.StatusBadRequest, elbv2CodeMissingAction, "the request must contain the parameter Action (CreateTargetGroup, DescribeTargetGroups, …)"}
	}
	op, ok := elbv2Ops[action]
	if !ok {
		return "", nil, &elbv2Error{http.StatusBadRequest, elbv2CodeInvalidAction,
			fmt.Sprintf("%q is not a target group action of this ELBv2 API; the actions are %s", action, strings.Join(elbv2Actions(), ", "))}
	}
	switch v, ok := p.str("Version"); {
	case !ok || v == "":
		return "", nil, elbv2Missing("Version (" + elbv2Version + ")")
	case v != elbv2Version:
		return "", nil, elbv2Invalid("Version: %q is not supported; this ELBv2 API speaks version %s", v, elbv2Version)
	}
	reg := targetgroup.Current()
	if reg == nil {
		return "", nil, &elbv2Error{http.StatusServiceUnavailable, elbv2CodeUnavailable,
			"the target_groups app is not running: declare target groups in the config (apps.target_groups, or the target_groups global option)"}
	}
	result, err := op.run(&elbv2Call{reg: reg, p: p, action: action, takes: op.takes})
	if err != nil {
		return "", nil, err
	}
	return action, result, nil
}

// done checks, once an operation has read its parameters and before it
// changes anything, that the request holds no parameter it does not take.
func (c *elbv2Call) done() error {
	return c.p.checkUnused(c.action, c.takes)
}

// readELBv2Form returns the request's parameters, still encoded: a POST's
// form body (the SDKs' and the CLI's way) or a GET's query string, which
// the Query protocol allows too.
func readELBv2Form(w http.ResponseWriter, r *http.Request) (string, error) {
	switch r.Method {
	case http.MethodGet:
		return r.URL.RawQuery, nil
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, POST")
		return "", &elbv2Error{http.StatusMethodNotAllowed, elbv2CodeMethod,
			fmt.Sprintf("%s: the ELBv2 API takes POST with a form body, or GET with a query string", r.Method)}
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/x-www-form-urlencoded" {
			return "", elbv2Invalid("Content-Type %q is not supported: the ELBv2 API speaks the AWS Query protocol, a POST body of type application/x-www-form-urlencoded (or GET with a query string)", ct)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return "", &elbv2Error{http.StatusRequestEntityTooLarge, elbv2CodeTooLarge, fmt.Sprintf("the request body exceeds %d bytes", maxBodyBytes)}
	case err != nil:
		return "", elbv2Invalid("reading the request body: %v", err)
	}
	raw := string(body)
	if q := r.URL.RawQuery; q != "" {
		// Parameters in both places are one request, as Go's ParseForm
		// reads them; a name in both is refused as given twice.
		if raw != "" {
			raw += "&"
		}
		raw += q
	}
	return raw, nil
}

func elbv2Actions() []string {
	return []string{"CreateTargetGroup", "DescribeTargetGroups", "ModifyTargetGroup", "DeleteTargetGroup", "RegisterTargets", "DeregisterTargets",
		"DescribeTargetHealth", "DescribeTargetGroupAttributes", "ModifyTargetGroupAttributes", "AddTags", "RemoveTags", "DescribeTags"}
}

// elbv2ErrorOf answers any error: the dialect's own, or the domain's by
// kind, its field named as the request names it.
func elbv2ErrorOf(err error) *elbv2Error {
	var ee *elbv2Error
	if errors.As(err, &ee) {
		return ee
	}
	a, ok := elbv2Kinds[targetgroup.KindOf(err)]
	if !ok {
		a = elbv2Kinds[targetgroup.KindInternal]
	}
	message := err.Error()
	var ve *targetgroup.ValidationError
	var de *targetgroup.Error
	switch {
	case errors.As(err, &ve):
		message = elbv2FieldMessage(ve)
	case errors.As(err, &de):
		message = de.Message
	}
	return &elbv2Error{a.status, a.code, message}
}

// elbv2Refine answers a domain error of kind with code instead of the
// kind's usual one, keeping its message.
func elbv2Refine(err error, kind targetgroup.Kind, code string) error {
	if err == nil || targetgroup.KindOf(err) != kind {
		return err
	}
	var ee *elbv2Error
	if errors.As(err, &ee) {
		return err
	}
	e := elbv2ErrorOf(err)
	e.code = code
	return e
}

func writeELBv2Error(w http.ResponseWriter, id string, e *elbv2Error) {
	fault := "Sender"
	if e.status >= 500 {
		fault = "Receiver"
	}
	body := struct {
		XMLName   xml.Name `xml:"ErrorResponse"`
		Xmlns     string   `xml:"xmlns,attr"`
		Type      string   `xml:"Error>Type"`
		Code      string   `xml:"Error>Code"`
		Message   string   `xml:"Error>Message"`
		RequestID string   `xml:"RequestId"`
	}{Xmlns: elbv2Namespace, Type: fault, Code: e.code, Message: e.message, RequestID: id}
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.status)
	_ = xml.NewEncoder(w).Encode(body)
}
