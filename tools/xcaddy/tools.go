//go:build tools

// Package tools pins the xcaddy version used to build Caddy with this plugin.
package tools

import _ "github.com/caddyserver/xcaddy/cmd/xcaddy"
