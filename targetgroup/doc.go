// Package targetgroup is the domain of the plugin: target groups as AWS
// load balancers have them, their targets and the states and reason codes
// of those targets, and the `target_groups` Caddy app that keeps them.
//
// From the outside in:
//
//   - App (app.go) is the Caddy app: one per loaded config. It validates
//     the config and puts it in force on the Registry.
//   - Registry (registry.go) is the one live registry of the process,
//     shared by every config through a usage pool, so that targets, their
//     health and the requests in flight outlive reloads. It runs the health
//     check scheduler and the background loops.
//   - Group (group.go) is one target group: its Spec, its targets and
//     their states, changed under the group's lock.
//   - Snapshot (snapshot.go) is a group as the request path sees it,
//     published anew after every change, so that picking a target (pick.go)
//     takes no lock.
//   - Target and Lease (target.go): a registered target, and one request
//     or connection in flight to it.
//
// Where each concern lives:
//
//   - the group JSON: config.go; its validation, with every default and
//     range of the AWS documents: spec.go (Spec, NewSpec), validate.go and
//     attributes.go (the table of attributes); addresses and what a target
//     may dial: addresses.go;
//   - health checks run and observed: health.go (the probes, the scheduler
//     and the threshold machine are in package healthcheck);
//   - the API's operations: ops.go, through change.go, which orders every
//     change as validate, store, apply; their answers: describe.go; their
//     refusals: errors.go, which says what kind of refusal an error is and
//     leaves statuses and codes to the dialects of the admin API (package
//     adminapi);
//   - persistence in Caddy's storage: record.go (what is stored), store.go
//     (writing it), restore.go (reading it back at start), keys.go (the
//     sticky cookie key ring);
//   - UDP flows of layer 4 groups: flows.go; time: clock.go.
package targetgroup
