// Package adminapi is the admin HTTP surface of target groups: the
// admin.api.target_groups module, which answers under /target-groups/ on
// Caddy's admin endpoint in the API's JSON dialect (routes.go). It reads and
// changes the live registry of package targetgroup through its exported
// operations only. The domain says what kind of refusal an error is
// (targetgroup.Kind) and knows nothing of HTTP; this package chooses the
// status and code each kind is answered with (errors.go), and owns what is
// HTTP's alone: methods, paths and request bodies (body.go).
package adminapi

import (
	"encoding/json"
	"net"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/google/uuid"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

func init() {
	caddy.RegisterModule(new(AdminAPI))
}

// AdminAPI is the `admin.api.target_groups` module: the JSON API under
// /target-groups/ on Caddy's admin endpoint, ELBv2's Query API at /elbv2
// (elbv2.go) and VPC Lattice's REST API under /vpc-lattice/ (lattice.go). It holds no state: the
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

// Routes returns the admin routes: one prefix, since Caddy's admin mux
// takes patterns without methods or wildcards; routes.go dispatches below it.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	// Caddy builds the admin endpoint anew (and calls this) at every config
	// load; its requests then tell where it listens now.
	targetgroup.ForgetAdminListeners()
	// ELBv2 clients post to the endpoint's path as given, with or without
	// a trailing slash (the JavaScript SDK adds one): both are served, as
	// Go's mux would redirect one to the other and no AWS SDK follows a
	// redirect. VPC Lattice clients always add a path below the endpoint.
	return []caddy.AdminRoute{
		{Pattern: "/target-groups/", Handler: noting(a.serve)},
		{Pattern: "/elbv2", Handler: noting(serveELBv2)},
		{Pattern: "/elbv2/", Handler: noting(serveELBv2)},
		{Pattern: "/vpc-lattice/", Handler: noting(serveLattice)},
	}
}

// noting notes the admin listener a request came through, so that no
// target can be the admin endpoint, before h answers it. Every handler
// answers every request itself and returns nil, so that Caddy adds no
// error body of its own.
func noting(h caddy.AdminHandlerFunc) caddy.AdminHandler {
	return caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			targetgroup.NoteAdminListener(addr)
		}
		return h(w, r)
	})
}

// serve answers the JSON dialect, with the JSON error shape of the
// contract.
func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	status := http.StatusOK
	body, err := dispatch(w, r)
	if ans, ok := body.(answer); ok {
		status, body = ans.status, ans.body
	}
	if err != nil {
		status, body = errorAnswer(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(body)
}

// requestID is a fresh request id for the AWS dialects' x-amzn-RequestId,
// in the UUID form AWS uses.
func requestID() string { return uuid.NewString() }

// answer is a value answered with another status than 200 OK.
type answer struct {
	status int
	body   any
}

// Interface guards
var _ caddy.AdminRouter = (*AdminAPI)(nil)
