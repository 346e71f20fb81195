// Package targetgroups brings the target groups of AWS Application and
// Network Load Balancers and VPC Lattice to Caddy. Build Caddy with
//
//	xcaddy build v2.11.9 --with github.com/caddy-targetgroup/caddy-targetgroup
//
// to get every module:
//
//   - target_groups: the app that owns the groups, their targets, health
//     checks, draining and state across reloads.
//   - admin.api.target_groups: the ELBv2-style API under /target-groups/ on
//     Caddy's admin endpoint (register and deregister targets at run time),
//     in package targetgroup/adminapi.
//   - http.reverse_proxy.upstreams.target_group: reverse_proxy's dynamic
//     upstreams are the routable targets of a group.
//   - http.reverse_proxy.selection_policies.target_group: picks a target with
//     the group's algorithm and counts requests in flight per target.
//   - http.handlers.target_group: a reverse_proxy wired to one group, with
//     the transport its protocol asks for.
//   - layer4.handlers.target_group: proxies TCP, TLS and UDP connections of
//     caddy-l4's layer4 app to a group's targets.
//   - http.handlers.target_groups_console: the operator console, a live
//     page of every group, mounted in a site of the operator's.
//
// The command `caddy target-groups` (the admin API as the AWS CLI's elbv2
// commands) is registered by the integration package; the Caddyfile syntax
// (the target_groups global option and the target_group and
// target_groups_console directives) by the caddyfile package.
package targetgroups

import (
	_ "github.com/caddy-targetgroup/caddy-targetgroup/caddyfile"
	_ "github.com/caddy-targetgroup/caddy-targetgroup/integration"
	_ "github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
	_ "github.com/caddy-targetgroup/caddy-targetgroup/targetgroup/adminapi"
)
