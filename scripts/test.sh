#!/usr/bin/env bash
# The whole test suite: formatting, vet, every package with the race
# detector (including the end-to-end tests that build Caddy with xcaddy and
# drive the real binary), then the README's demo, start to finish.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi

echo "== go vet"
go vet ./...

echo "== build Caddy with the plugin (xcaddy)"
scripts/build-caddy.sh
export CADDY_BINARY="$PWD/bin/caddy"

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

echo "== demo"
DEMO_EXIT=1 DEMO_ADMIN_PORT=${DEMO_ADMIN_PORT:-2399} DEMO_HTTP_PORT=${DEMO_HTTP_PORT:-8399} scripts/demo.sh >/tmp/caddy-targetgroup-demo.log 2>&1 || {
	cat /tmp/caddy-targetgroup-demo.log >&2
	exit 1
}
grep -q "hello from backend" /tmp/caddy-targetgroup-demo.log
echo "ok: all tests passed"
