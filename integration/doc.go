// Package integration plugs target groups into Caddy. For HTTP it is
// reverse_proxy's `target_group` upstream source and selection policy,
// which share one request's state across its tries (attempt.go), the HTTP
// half of cookie stickiness (sticky.go), and the `target_group` handler: a
// reverse_proxy wired to one group. For layer 4 it is caddy-l4's
// `target_group` handler (layer4.go) and the relay that copies a
// connection or a UDP flow to its target (layer4_relay.go). Both ask the
// group's snapshot where a request or connection goes
// (targetgroup.Snapshot.Pick). The package's tests run a real Caddy with
// real backends.
package integration
