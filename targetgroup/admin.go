package targetgroup

import (
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
	return []caddy.AdminRoute{{Pattern: "/target-groups/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// TargetsRequest is the body of RegisterTargets and DeregisterTargets.
type TargetsRequest struct {
	Targets []TargetConfig `json:"targets"`
}

// serve answers every request itself, with the JSON error shape of the
// contract, and returns nil so Caddy adds no error body of its own.
func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
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

// decodeBody reads a bounded JSON body strictly: unknown fields and
// trailing data are validation errors.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(new(json.RawMessage)) != io.EOF {
		err = errors.New("unexpected data after the JSON object")
	}
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooBig):
		return &Error{http.StatusRequestEntityTooLarge, CodePayloadTooLarge, fmt.Sprintf("request body exceeds %d bytes", maxBodyBytes)}
	case errors.Is(err, io.EOF):
		return fieldErr("body", "a JSON object is required")
	default:
		return fieldErr("body", "%v", err)
	}
}

// Interface guards
var _ caddy.AdminRouter = (*AdminAPI)(nil)
