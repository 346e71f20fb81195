// Package fleet holds the end-to-end tests of a fleet of Caddy nodes (DESIGN.md,
// "Scale-out: a fleet of Caddy nodes"): real Caddy processes built with the
// plugin and github.com/pberkel/caddy-storage-redis, sharing one
// redis-server that each test starts on a loopback port of its own, with
// real backends and load from this process. The tests speak only the public
// contract: the admin API, the HTTP listeners, signals to the processes.
//
// They need CADDY_BINARY (a Caddy built with both modules; scripts/test.sh
// builds bin/caddy-race with the race detector, and a DATA RACE in a
// node's log fails the test) and redis-server on PATH; without either they
// are skipped, saying why. FLEET_LONG=1 runs the long form (more changes,
// more rounds). The package has test files only.
package fleet
