#!/usr/bin/env bash
# make reliability: the reliability suite (integration/reliability_test.go)
# at full length against a real Caddy process built with the plugin: churn
# for RELIABILITY_SECONDS (default 60), draining, 20 reloads under load,
# kill -9 and restart, and a backend dying under load; then the fleet suite
# (integration/fleet) in its long form. `make test` runs both in their short
# forms (RELIABILITY_SECONDS defaults to 10 there).
#
#   RELIABILITY_SECONDS=60  how long the churn scenario runs
#   RELIABILITY_RACE=1      build Caddy with the race detector (bin/caddy-race),
#                           so that data races in the plugin under churn,
#                           reloads and restarts fail the run (the default)
#   RELIABILITY_RACE=0      use bin/caddy as `make test` builds it
#   CADDY_BINARY=...        use this Caddy instead of building one
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export RELIABILITY_SECONDS=${RELIABILITY_SECONDS:-60}

# The fleet suite needs the Redis storage module in the binary.
export CADDY_WITH="${CADDY_WITH:-} github.com/pberkel/caddy-storage-redis@v1.8.1"
if [ -z "${CADDY_BINARY:-}" ]; then
	if [ "${RELIABILITY_RACE:-1}" = 1 ]; then
		echo "== build Caddy with the plugin and the race detector (xcaddy)"
		XCADDY_RACE_DETECTOR=1 CADDY_OUTPUT="$root/bin/caddy-race" scripts/build-caddy.sh
		export CADDY_BINARY="$root/bin/caddy-race"
	else
		echo "== build Caddy with the plugin (xcaddy)"
		scripts/build-caddy.sh
		export CADDY_BINARY="$root/bin/caddy"
	fi
fi

echo "== reliability suite (churn for ${RELIABILITY_SECONDS}s)"
# A race detected in the Caddy process is written to its log: the suite
# fails on it and prints the log.
if ! go test -race -count=1 -timeout 30m -run '^TestReliability$' -v ./integration; then
	echo "reliability suite failed" >&2
	exit 1
fi
echo "ok: reliability suite passed"

echo "== fleet suite, long form (three Caddy nodes on one Redis)"
if ! command -v redis-server >/dev/null 2>&1; then
	echo "redis-server is missing: install Debian's redis-server (.ci/run does)" >&2
	exit 1
fi
if ! FLEET_LONG=1 go test -race -count=1 -timeout 30m -v ./integration/fleet; then
	echo "fleet suite failed" >&2
	exit 1
fi
echo "ok: fleet suite passed"
