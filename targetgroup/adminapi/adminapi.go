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

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

func init() {
	caddy.RegisterModule(new(AdminAPI))
}

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

// Routes returns the admin routes: one prefix, since Caddy's admin mux
// takes patterns without methods or wildcards; routes.go dispatches below it.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	// Caddy builds the admin endpoint anew (and calls this) at every config
	// load; its requests then tell where it listens now.
	targetgroup.ForgetAdminListeners()
	return []caddy.AdminRoute{{Pattern: "/target-groups/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// serve answers every request itself, with the JSON error shape of the
// contract, and returns nil so Caddy adds no error body of its own.
func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	if addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		targetgroup.NoteAdminListener(addr) // so that no target can be the admin endpoint
	}
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

// answer is a value answered with another status than 200 OK.
type answer struct {
	status int
	body   any
}

// Interface guards
var _ caddy.AdminRouter = (*AdminAPI)(nil)
