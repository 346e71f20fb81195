package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-targetgroup/caddy-targetgroup/integration"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("target_group", parseHandler)
	// Like reverse_proxy it ends the chain, so it goes where reverse_proxy
	// goes and sites need no order option for it.
	httpcaddyfile.RegisterDirectiveOrder("target_group", httpcaddyfile.After, "reverse_proxy")
}

// parseHandler sets up the target_group handler from Caddyfile tokens:
//
//	target_group [<matcher>] <group>
func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(integration.Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}
