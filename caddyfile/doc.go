// Package caddyfile registers the Caddyfile syntax of target groups: the
// target_groups global option and the target_group directive.
package caddyfile
