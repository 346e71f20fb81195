package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-targetgroup/caddy-targetgroup/integration"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("target_groups_console", parseConsole)
	// Like metrics, it serves a page of its own at a path of the site and
	// ends the chain: it goes right after metrics, before reverse_proxy
	// and target_group, so that a site proxying every other path needs no
	// order option for it.
	httpcaddyfile.RegisterDirectiveOrder("target_groups_console", httpcaddyfile.After, "metrics")
}

// parseConsole sets up the target_groups_console handler from Caddyfile
// tokens:
//
//	target_groups_console [<matcher>] [read_only]
func parseConsole(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	c := new(integration.Console)
	err := c.UnmarshalCaddyfile(h.Dispenser)
	return c, err
}
