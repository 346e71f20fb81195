#!/usr/bin/env bash
# The README's demo: builds Caddy with the plugin, starts three backends on
# loopback and Caddy with examples/demo/Caddyfile, registers the backends in
# target group "web" through the admin API, and shows traffic spread, a
# failing health check and a deregistration. Set DEMO_EXIT=1 to stop at the
# end instead of leaving Caddy running.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEMO_ADMIN_PORT=${DEMO_ADMIN_PORT:-2019} DEMO_HTTP_PORT=${DEMO_HTTP_PORT:-8080}
admin="http://localhost:$DEMO_ADMIN_PORT"
site="http://127.0.0.1:$DEMO_HTTP_PORT"
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; echo; }

step "Building Caddy with the plugin (xcaddy)"
scripts/build-caddy.sh
go build -o bin/demo-backend ./cmd/demo-backend

step "Starting three backends on 127.0.0.1:9001-9003"
bin/demo-backend -ports 9001,9002,9003 -down-dir "$work" &
pids+=($!)

step "Starting Caddy with examples/demo/Caddyfile"
bin/caddy run --config examples/demo/Caddyfile >"$work/caddy.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fsS "$admin/config/" >/dev/null 2>&1 && break; sleep 0.1; done

step "Registering the backends (RegisterTargets)"
show curl -sS -X POST "$admin/target-groups/web/targets" -H 'Content-Type: application/json' \
	-d '{"targets":[{"id":"127.0.0.1","port":9001},{"id":"127.0.0.1","port":9002},{"id":"127.0.0.1","port":9003}]}'

step "Waiting for the first health checks to pass"
for _ in $(seq 100); do
	[ "$(curl -fsS "$admin/target-groups/web/targets" | grep -o '"state":"healthy"' | wc -l)" = 3 ] && break
	sleep 0.1
done
show curl -sS "$admin/target-groups/web/targets"

step "Six requests, round robin"
for _ in 1 2 3 4 5 6; do curl -sS "$site/"; done

step "Backend 9002 starts failing its health check"
touch "$work/9002"
for _ in $(seq 200); do
	curl -fsS "$admin/target-groups/web/targets" | grep -q '"Target.ResponseCodeMismatch"' && break
	sleep 0.1
done
show curl -sS "$admin/target-groups/web/targets"
for _ in 1 2 3 4; do curl -sS "$site/"; done
rm -f "$work/9002"

step "Deregistering 9003 (DeregisterTargets): it drains, new requests skip it"
show curl -sS -X POST "$admin/target-groups/web/targets/deregister" -H 'Content-Type: application/json' \
	-d '{"targets":[{"id":"127.0.0.1","port":9003}]}'
for _ in 1 2 3 4; do curl -sS "$site/"; done

step "Group health"
show curl -sS "$admin/target-groups/web/health"

if [ "${DEMO_EXIT:-0}" = 1 ]; then
	step "Done"
	exit 0
fi
step "Caddy keeps running on $site (admin API on $admin); Ctrl-C to stop"
wait
