#!/usr/bin/env bash
# The whole test suite: formatting, vet, every package with the race
# detector (including the end-to-end tests that build Caddy with xcaddy and
# drive the real binary, built with the race detector), then the README's
# demo, start to finish.
set -euo pipefail
cd "$(dirname "$0")/.."

# step ends the step under way, printing how long it took, and names the
# next one; make test's time is theirs.
suite_start=$(date +%s)
step_name="" step_start=$suite_start
step() {
	local now
	now=$(date +%s)
	if [ -n "$step_name" ]; then
		echo "-- $step_name: $((now - step_start)) s"
	fi
	step_name=$1 step_start=$now
	if [ -n "$step_name" ]; then
		echo "== $step_name"
	fi
}

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi

step "go vet"
go vet ./...

# Both Caddy builds carry the Redis storage module beside the plugin: the
# fleet suite (integration/fleet) runs several of them on one redis-server.
fleet_modules="github.com/pberkel/caddy-storage-redis@v1.8.1"
step "build Caddy with the plugin (xcaddy)"
CADDY_WITH="${CADDY_WITH:-} $fleet_modules" scripts/build-caddy.sh
step "build Caddy with the race detector"
XCADDY_RACE_DETECTOR=1 CADDY_WITH="${CADDY_WITH:-} $fleet_modules" CADDY_OUTPUT="$PWD/bin/caddy-race" scripts/build-caddy.sh
# The built-binary tests run against the race-detector Caddy and fail on
# any DATA RACE in its log.
export CADDY_BINARY="$PWD/bin/caddy-race"

step "go test -race"
# This includes the reliability suite's short form (RELIABILITY_SECONDS,
# default 10) against bin/caddy, the fleet suite's short form (FLEET_LONG=1
# runs the long one; it needs redis-server, which .ci/run installs), and
# every fuzz target's seed corpus.
go test -race -count=1 -timeout 20m ./...

step "AWS clients against the built Caddy (integration/awsclients)"
# A module of its own, so that the AWS SDKs stay out of the plugin's
# dependencies: the Go SDK's ELBv2 and VPC Lattice clients, Debian's AWS
# CLI (.ci/run installs it) and, where Node.js is present, the JavaScript
# SDK's VPC Lattice client.
if command -v npm >/dev/null 2>&1 && [ ! -d integration/awsclients/js/node_modules ]; then
	(cd integration/awsclients/js && npm ci --no-audit --no-fund --loglevel=error)
fi
(cd integration/awsclients && go vet ./... && go test -race -count=1 -timeout 10m ./...)

step "fuzz, each target ${FUZZTIME:-5s} (make fuzz runs them longer)"
make -s fuzz FUZZTIME="${FUZZTIME:-5s}"

step "benchmark smoke run (make bench runs it in full)"
if command -v wrk >/dev/null 2>&1 && { command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; }; then
	smoke=$(mktemp -d)
	CADDY_BINARY="$PWD/bin/caddy" BENCH_ROUNDS=1 BENCH_DURATION=1 BENCH_WARMUP=1 BENCH_RESULTS="$smoke" BENCH_OUT="$smoke/results.md" \
		scripts/bench.sh >"$smoke/log" 2>&1 || {
		cat "$smoke/log" >&2
		exit 1
	}
	grep -q "Caddy target group, lb_cookie stickiness" "$smoke/results.md"
	rm -rf "$smoke"
else
	echo "skipped: wrk or haproxy is missing (.ci/run installs them)"
fi

step "demo"
DEMO_EXIT=1 DEMO_ADMIN_PORT=${DEMO_ADMIN_PORT:-2399} DEMO_HTTP_PORT=${DEMO_HTTP_PORT:-8399} scripts/demo.sh >/tmp/caddy-targetgroup-demo.log 2>&1 || {
	cat /tmp/caddy-targetgroup-demo.log >&2
	exit 1
}
grep -q "hello from backend" /tmp/caddy-targetgroup-demo.log
step ""
echo "ok: all tests passed in $(($(date +%s) - suite_start)) s"
