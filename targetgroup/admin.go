package targetgroup

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(new(AdminAPI))
}

// maxBodyBytes bounds request bodies: Caddy's admin server limits none of
// the routes that modules add.
const maxBodyBytes = 1 << 20

// AdminAPI is the `admin.api.target_groups` module: the ELBv2-style API
// under /target-groups/ on Caddy's admin endpoint. It holds no state: the
// admin server is rebuilt before the apps on every config load, so every
// request looks the live registry up.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (*AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.target_groups",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	// Caddy builds the admin endpoint anew (and calls this) at every config
	// load; its requests then tell where it listens now.
	forgetAdminListeners()
	return []caddy.AdminRoute{{Pattern: "/target-groups/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// TargetsRequest is the body of RegisterTargets and DeregisterTargets.
type TargetsRequest struct {
	Targets []TargetConfig `json:"targets"`
}

// serve answers every request itself, with the JSON error shape of the
// contract, and returns nil so Caddy adds no error body of its own.
func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	if addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		noteAdminListener(addr) // so that no target can be the admin endpoint
	}
	status, body := a.route(w, r)
	var ae *Error
	if err, ok := body.(error); ok {
		ae = asAPIError(err)
		status, body = ae.Status, map[string]any{"error": map[string]string{"code": ae.Code, "message": ae.Message}}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(body)
}

func methodNotAllowed(r *http.Request, allowed ...string) *Error {
	return &Error{http.StatusMethodNotAllowed, CodeMethodNotAllowed, fmt.Sprintf("%s %s: allowed methods are %s", r.Method, r.URL.Path, strings.Join(allowed, ", "))}
}

// route dispatches on the path; the second result is a response value or an error.
func (a *AdminAPI) route(w http.ResponseWriter, r *http.Request) (int, any) {
	reg := Current()
	if reg == nil {
		return 0, &Error{http.StatusServiceUnavailable, CodeUnavailable, "the target_groups app is not running: declare target groups in the config (apps.target_groups, or the target_groups global option)"}
	}
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, "/target-groups"), "/")
	parts := strings.Split(rest, "/")
	if rest == "" {
		parts = nil
	}
	if len(parts) == 0 {
		switch r.Method {
		case http.MethodGet:
			groups := reg.Groups()
			out := make([]GroupDescription, 0, len(groups))
			for _, g := range groups {
				out = append(out, g.Describe())
			}
			return http.StatusOK, map[string]any{"target_groups": out}
		case http.MethodPost:
			var req CreateRequest
			if err := decodeBody(w, r, &req); err != nil {
				return 0, err
			}
			g, _, err := reg.CreateGroup(req)
			if err != nil {
				return 0, err
			}
			return http.StatusOK, g.Describe()
		}
		return 0, methodNotAllowed(r, http.MethodGet, http.MethodPost)
	}
	g := reg.Group(parts[0])
	if g == nil {
		return 0, errNotFound(parts[0])
	}
	switch sub := strings.Join(parts[1:], "/"); sub {
	case "":
		switch r.Method {
		case http.MethodGet:
			return http.StatusOK, g.Describe()
		case http.MethodPatch:
			var body map[string]json.RawMessage
			if err := decodeBody(w, r, &body); err != nil {
				return 0, err
			}
			if err := reg.ModifyHealthCheck(g.name, body); err != nil {
				return 0, err
			}
			return http.StatusOK, g.Describe()
		case http.MethodDelete:
			if err := reg.DeleteGroup(g.name); err != nil {
				return 0, err
			}
			return http.StatusOK, map[string]any{}
		}
		return 0, methodNotAllowed(r, http.MethodGet, http.MethodPatch, http.MethodDelete)
	case "attributes":
		switch r.Method {
		case http.MethodGet:
			return http.StatusOK, map[string]any{"attributes": g.Spec().Config.Attributes}
		case http.MethodPatch:
			var body struct {
				Attributes map[string]string `json:"attributes"`
			}
			if err := decodeBody(w, r, &body); err != nil {
				return 0, err
			}
			if err := reg.ModifyAttributes(g.name, body.Attributes); err != nil {
				return 0, err
			}
			return http.StatusOK, map[string]any{"attributes": g.Spec().Config.Attributes}
		}
		return 0, methodNotAllowed(r, http.MethodGet, http.MethodPatch)
	case "targets":
		switch r.Method {
		case http.MethodGet:
			keys, err := targetFilter(r, g)
			if err != nil {
				return 0, err
			}
			return http.StatusOK, map[string]any{"targets": g.DescribeTargetHealth(keys...)}
		case http.MethodPost:
			var req TargetsRequest
			if err := decodeBody(w, r, &req); err != nil {
				return 0, err
			}
			norm, err := reg.RegisterTargets(g.name, req.Targets)
			if err != nil {
				return 0, err
			}
			// The health of the targets of this call only: answering with the
			// whole group made large groups quadratic to fill in batches.
			return http.StatusOK, map[string]any{"targets": g.DescribeTargetHealth(targetKeys(norm, 0)...)}
		}
		return 0, methodNotAllowed(r, http.MethodGet, http.MethodPost)
	case "targets/deregister":
		if r.Method != http.MethodPost {
			return 0, methodNotAllowed(r, http.MethodPost)
		}
		var req TargetsRequest
		if err := decodeBody(w, r, &req); err != nil {
			return 0, err
		}
		if err := reg.DeregisterTargets(g.name, req.Targets); err != nil {
			return 0, err
		}
		return http.StatusOK, map[string]any{"targets": g.DescribeTargetHealth(targetKeys(req.Targets, g.Spec().Config.Port)...)}
	case "health":
		if r.Method != http.MethodGet {
			return 0, methodNotAllowed(r, http.MethodGet)
		}
		h := g.Health()
		if h.DNSFailover {
			return http.StatusServiceUnavailable, h
		}
		return http.StatusOK, h
	}
	return 0, &Error{http.StatusNotFound, CodeNotFound, fmt.Sprintf("no such resource: %s", r.URL.Path)}
}

// targetKeys lists the keys of targets, a missing port meaning defaultPort.
func targetKeys(ts []TargetConfig, defaultPort int) []TargetKey {
	keys := make([]TargetKey, len(ts))
	for i, t := range ts {
		if t.Port == 0 {
			t.Port = defaultPort
		}
		keys[i] = t.Key()
	}
	return keys
}

// targetFilter reads ?target=<id>[:<port>] (repeatable), the Targets
// parameter of DescribeTargetHealth.
func targetFilter(r *http.Request, g *Group) ([]TargetKey, error) {
	var keys []TargetKey
	for _, v := range r.URL.Query()["target"] {
		id, port := v, 0
		if host, p, err := net.SplitHostPort(v); err == nil {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return nil, fieldErr("target", "%q: the port must be within 1-65535", v)
			}
			id, port = host, n
		}
		if port == 0 {
			port = g.Spec().Config.Port
		}
		keys = append(keys, TargetKey{ID: id, Port: port})
	}
	return keys, nil
}

// decodeBody reads a bounded JSON body strictly: unknown fields, a key
// given twice in one object and trailing data are validation errors. The
// whole body counts toward maxBodyBytes, trailing data included.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return &Error{http.StatusRequestEntityTooLarge, CodePayloadTooLarge, fmt.Sprintf("request body exceeds %d bytes", maxBodyBytes)}
	case err != nil:
		return fieldErr("body", "reading the request body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil && dec.Decode(new(json.RawMessage)) != io.EOF {
		err = errors.New("unexpected data after the JSON object")
	}
	switch {
	case err == nil:
		// The body is one valid JSON value now, which the scan relies on.
		return duplicateKey(raw)
	case errors.Is(err, io.EOF):
		return fieldErr("body", "a JSON object is required")
	default:
		return fieldErr("body", "%v", err)
	}
}

// maxBodyDepth bounds the nesting duplicateKey follows; no body of the API
// nests deeper than a few levels, and a PATCH body's raw values could
// otherwise nest as deep as the decoder allows.
const maxBodyDepth = 32

// duplicateKey refuses a key given twice in one object of the JSON value
// raw holds, at any depth, naming it by its path ("targets[1].port").
// encoding/json keeps the last one silently, so that a client, a proxy in
// front of the admin API and Caddy could each read a different request.
// raw must be valid JSON (the decoder has accepted it): the scan checks
// nothing else, and allocates nothing for objects of few keys, so that a
// large registration costs little more than its decoding.
func duplicateKey(raw []byte) error {
	if _, bad := scanKeys(raw, skipSpace(raw, 0), 0); bad != nil {
		var path strings.Builder
		for i := len(bad.path) - 1; i >= 0; i-- {
			switch seg := bad.path[i]; {
			case seg.index >= 0:
				path.WriteString("[" + strconv.Itoa(seg.index) + "]")
			case path.Len() > 0:
				path.WriteString("." + seg.key)
			default:
				path.WriteString(seg.key)
			}
		}
		return fieldErr(path.String(), "%s", bad.msg)
	}
	return nil
}

// badKey is what scanKeys found wrong, and where: the path's segments
// innermost first (port, [1], targets), added as the scan unwinds so that
// nothing is built while the body is fine.
type badKey struct {
	path []pathSegment
	msg  string
}

// pathSegment is a key in an object, or an index (>= 0) in an array.
type pathSegment struct {
	key   string
	index int
}

// scanKeys scans the value at raw[i] and returns the index after it.
func scanKeys(raw []byte, i, depth int) (int, *badKey) {
	switch raw[i] {
	case '"':
		return skipString(raw, i), nil
	case '{', '[':
	default: // a number, true, false or null
		for i < len(raw) && !isValueEnd(raw[i]) {
			i++
		}
		return i, nil
	}
	if depth >= maxBodyDepth {
		return 0, &badKey{msg: fmt.Sprintf("JSON nested deeper than %d levels", maxBodyDepth)}
	}
	object, closing := raw[i] == '{', byte(']')
	if object {
		closing = '}'
	}
	var few [8][]byte
	keys := few[:0]
	var many map[string]bool
	i = skipSpace(raw, i+1)
	for n := 0; raw[i] != closing; n++ {
		var key []byte
		if object {
			end := skipString(raw, i)
			if key = raw[i+1 : end-1]; bytes.IndexByte(key, '\\') >= 0 {
				var s string
				_ = json.Unmarshal(raw[i:end], &s)
				key = []byte(s)
			}
			dup := false
			if many != nil {
				dup = many[string(key)]
				many[string(key)] = true
			} else {
				for _, k := range keys {
					dup = dup || bytes.Equal(k, key)
				}
				if keys = append(keys, key); len(keys) > len(few) {
					// Past a few keys, a set: a large object must not cost
					// its size squared.
					many = make(map[string]bool, 2*len(keys))
					for _, k := range keys {
						many[string(k)] = true
					}
				}
			}
			if dup {
				return 0, &badKey{path: []pathSegment{{key: string(key), index: -1}}, msg: "given twice in one object of the request body; give each key once"}
			}
			i = skipSpace(raw, skipSpace(raw, end)+1) // past the colon
		}
		var bad *badKey
		if i, bad = scanKeys(raw, i, depth+1); bad != nil {
			seg := pathSegment{key: string(key), index: -1}
			if !object {
				seg.index = n
			}
			bad.path = append(bad.path, seg)
			return 0, bad
		}
		if i = skipSpace(raw, i); raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	return i + 1, nil
}

func isValueEnd(c byte) bool {
	switch c {
	case ',', ']', '}', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

// skipString returns the index after the JSON string that starts at raw[i].
func skipString(raw []byte, i int) int {
	for i++; raw[i] != '"'; i++ {
		if raw[i] == '\\' {
			i++
		}
	}
	return i + 1
}

func skipSpace(raw []byte, i int) int {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\r' || raw[i] == '\n') {
		i++
	}
	return i
}

// Interface guards
var _ caddy.AdminRouter = (*AdminAPI)(nil)
