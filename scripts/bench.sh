#!/usr/bin/env bash
# make bench: what a request costs through a target group, against Caddy's
# own reverse_proxy (round robin, and its cookie policy beside our lb_cookie),
# HAProxy and the backend itself, in one run.
#
# Builds Caddy with the plugin (xcaddy), installs wrk and haproxy from
# Debian when missing, starts three loopback backends (cmd/demo-backend),
# one Caddy with a server per configuration (stock reverse_proxy with static
# upstreams and round_robin, and with its cookie policy; the target_group
# handler on three groups: round_robin, least_outstanding_requests, lb_cookie
# stickiness with and without a cookie; reverse_proxy with
# `dynamic target_group` and `lb_policy target_group` on the same groups) and
# HAProxy (roundrobin),
# all on the same backends with health checks every 5s. Targets are
# registered through the admin API. Then it measures requests/s and p50/p99
# latency with wrk at a fixed concurrency, in rounds: each round runs every
# configuration once, in a rotated order, so that drift of the machine hits
# them alike, and the ratios against the stock reverse_proxy are taken per
# round. Writes bench/results.md and the raw numbers in bench/results/.
#
# Settings (environment):
#   BENCH_ROUNDS=9 BENCH_DURATION=8 (seconds per run) BENCH_WARMUP=3
#   BENCH_CONNECTIONS=64 BENCH_PORT_BASE=18400
#   BENCH_CONFIGS="stock tg-rr"  measure only these (more rounds in the same
#                       time: direct stock tg-rr tg-lor tg-sticky tg-sticky-new
#                       dyn-rr dyn-lor dyn-sticky-new stock-cookie stock-cookie-new
#                       haproxy tg-rr-nm)
#   BENCH_PROFILE=1     also take a 10s CPU profile of Caddy under each Caddy
#                       configuration (bench/results/<name>.prof and <name>-top.raw)
#   BENCH_CLIENT=loadgen  use cmd/loadgen instead of wrk
#   CADDY_BINARY=...    use this Caddy instead of building one
#   BENCH_OUT=bench/results.md BENCH_RESULTS=bench/results (raw numbers)
#
# CPUs: the proxy under test is pinned to the first half of the CPUs, wrk
# and the backends to the other half (on 2 cores: proxy on CPU 0, wrk and
# backends on CPU 1), so that the load generator does not steal the proxy's
# CPU. The backend-direct run pins wrk to the proxy's half instead.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

ROUNDS=${BENCH_ROUNDS:-9}
DURATION=${BENCH_DURATION:-8}
WARMUP=${BENCH_WARMUP:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
BASE=${BENCH_PORT_BASE:-18400}
PROFILE=${BENCH_PROFILE:-0}
CLIENT=${BENCH_CLIENT:-wrk}
OUT=${BENCH_OUT:-bench/results.md}

backend_ports=($((BASE + 1)) $((BASE + 2)) $((BASE + 3)))
admin_port=$((BASE + 19))
haproxy_port=$((BASE + 20))
declare -A port=([direct]=${backend_ports[0]} [stock]=$((BASE + 10)) [tg-rr]=$((BASE + 11)) [tg-lor]=$((BASE + 12)) [tg-sticky]=$((BASE + 13)) [stock-cookie]=$((BASE + 14)) [haproxy]=$haproxy_port
	[tg-sticky-new]=$((BASE + 15)) [dyn-rr]=$((BASE + 16)) [dyn-lor]=$((BASE + 17)) [dyn-sticky-new]=$((BASE + 18))
	[stock-cookie-new]=$((BASE + 21)) [tg-rr-nm]=$((BASE + 111)))
# The second Caddy (tg-rr-nm) listens 100 ports above the first.
nm_admin_port=$((BASE + 119))
all_configs="direct stock tg-rr tg-rr-nm tg-lor tg-sticky tg-sticky-new dyn-rr dyn-lor dyn-sticky-new stock-cookie stock-cookie-new haproxy"
read -r -a configs <<<"${BENCH_CONFIGS:-$all_configs}"
for c in "${configs[@]}"; do
	[[ " $all_configs " == *" $c "* ]] || { echo "BENCH_CONFIGS: unknown configuration $c (known: $all_configs)" >&2; exit 2; }
done

log() { printf '== %s\n' "$*" >&2; }

# --- tools ---------------------------------------------------------------
missing=()
if [ "$CLIENT" = wrk ] && ! command -v wrk >/dev/null 2>&1; then missing+=(wrk); fi
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]} (Debian)"
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update && $sudo apt-get install -y "${missing[@]}"
fi
haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)

tmp=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

if [ -n "${CADDY_BINARY:-}" ]; then
	caddy=$CADDY_BINARY
else
	log "building Caddy with the plugin (xcaddy)"
	scripts/build-caddy.sh >&2
	caddy=$root/bin/caddy
fi
go build -o "$tmp/demo-backend" ./cmd/demo-backend
go build -o "$tmp/loadgen" ./cmd/loadgen

# --- CPU layout ------------------------------------------------------------
ncpu=$(nproc)
if [ "$ncpu" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
	half=$((ncpu / 2))
	span() { if [ "$1" = "$2" ]; then echo "$1"; else echo "$1-$2"; fi; }
	proxy_cpus=$(span 0 $((half - 1)))
	client_cpus=$(span "$half" $((ncpu - 1)))
	pin_proxy=(taskset -c "$proxy_cpus")
	pin_client=(taskset -c "$client_cpus")
	client_threads=$((ncpu - half))
	layout="proxy on CPU $proxy_cpus; wrk and backends on CPU $client_cpus (backend-direct: wrk on CPU $proxy_cpus)"
else
	pin_proxy=()
	pin_client=()
	client_threads=1
	layout="not pinned ($ncpu CPU): the proxy, wrk and the backends share the CPU"
fi
log "CPU layout: $layout"

# --- backends, Caddy, HAProxy ---------------------------------------------
ports_csv=$(IFS=,; echo "${backend_ports[*]}")
"${pin_client[@]}" "$tmp/demo-backend" -ports "$ports_csv" 2>"$tmp/backends.log" &
pids+=($!)
backend_pid=$!

hc='"health_check": {"path": "/health", "interval": "5s", "timeout": "2s", "healthy_threshold": 2, "unhealthy_threshold": 2}'
group() { echo "\"$1\": {\"port\": ${backend_ports[0]}, $hc, \"attributes\": {$2}}"; }
server() { echo "\"$1\": {\"listen\": [\"127.0.0.1:$2\"], \"automatic_https\": {\"disable\": true}, \"routes\": [{\"handle\": [$3]}]}"; }
static_upstreams=$(for p in "${backend_ports[@]}"; do printf '{"dial": "127.0.0.1:%s"},' "$p"; done)
static_upstreams=${static_upstreams%,}
dynamic() { echo "{\"handler\": \"reverse_proxy\", \"dynamic_upstreams\": {\"source\": \"target_group\", \"group\": \"$1\"}, \"load_balancing\": {\"selection_policy\": {\"policy\": \"target_group\", \"group\": \"$1\"}}}"; }
cat >"$tmp/caddy.json" <<EOF
{
	"admin": {"listen": "127.0.0.1:$admin_port"},
	"storage": {"module": "file_system", "root": "$tmp/storage"},
	"logging": {"logs": {"default": {"level": "WARN", "writer": {"output": "file", "filename": "$tmp/caddy.log"}}}},
	"apps": {
		"target_groups": {"groups": {
			$(group bench-rr '"load_balancing.algorithm.type": "round_robin"'),
			$(group bench-lor '"load_balancing.algorithm.type": "least_outstanding_requests"'),
			$(group bench-sticky '"stickiness.enabled": "true", "stickiness.type": "lb_cookie"')
		}},
		"http": {"servers": {
			$(server stock "${port[stock]}" "{\"handler\": \"reverse_proxy\", \"upstreams\": [$static_upstreams], \"load_balancing\": {\"selection_policy\": {\"policy\": \"round_robin\"}}, \"health_checks\": {\"active\": {\"uri\": \"/health\", \"interval\": \"5s\", \"timeout\": \"2s\"}}}"),
			$(server tg-rr "${port[tg-rr]}" '{"handler": "target_group", "group": "bench-rr"}'),
			$(server tg-lor "${port[tg-lor]}" '{"handler": "target_group", "group": "bench-lor"}'),
			$(server tg-sticky "${port[tg-sticky]}" '{"handler": "target_group", "group": "bench-sticky"}'),
			$(server tg-sticky-new "${port[tg-sticky-new]}" '{"handler": "target_group", "group": "bench-sticky"}'),
			$(server dyn-rr "${port[dyn-rr]}" "$(dynamic bench-rr)"),
			$(server dyn-lor "${port[dyn-lor]}" "$(dynamic bench-lor)"),
			$(server dyn-sticky-new "${port[dyn-sticky-new]}" "$(dynamic bench-sticky)"),
			$(server stock-cookie "${port[stock-cookie]}" "{\"handler\": \"reverse_proxy\", \"upstreams\": [$static_upstreams], \"load_balancing\": {\"selection_policy\": {\"policy\": \"cookie\", \"name\": \"lb\", \"secret\": \"bench\"}}, \"health_checks\": {\"active\": {\"uri\": \"/health\", \"interval\": \"5s\", \"timeout\": \"2s\"}}}"),
			$(server stock-cookie-new "${port[stock-cookie-new]}" "{\"handler\": \"reverse_proxy\", \"upstreams\": [$static_upstreams], \"load_balancing\": {\"selection_policy\": {\"policy\": \"cookie\", \"name\": \"lb\", \"secret\": \"bench\"}}, \"health_checks\": {\"active\": {\"uri\": \"/health\", \"interval\": \"5s\", \"timeout\": \"2s\"}}}")
		}}
	}
}
EOF
mkdir -p "$tmp/home"
HOME=$tmp/home XDG_DATA_HOME=$tmp/home XDG_CONFIG_HOME=$tmp/home \
	"${pin_proxy[@]}" "$caddy" run --config "$tmp/caddy.json" >"$tmp/caddy.out" 2>&1 &
pids+=($!)
caddy_pid=$!

# What the metrics cost: a second Caddy, the same config 100 ports up and
# pinned alike (so that both carry the same servers, groups and health
# checks), with the per-target metrics off; its round_robin server is
# tg-rr-nm, which tg-rr is held against.
nm_config=$(sed -e "s|\"target_groups\": {|\"target_groups\": {\"per_target_metrics\": false, |" \
	-e "s|$tmp/storage|$tmp/storage-nm|; s|$tmp/caddy.log|$tmp/caddy-nm.log|" \
	-e "s|\"listen\": \"127.0.0.1:$admin_port\"|\"listen\": \"127.0.0.1:$nm_admin_port\"|" "$tmp/caddy.json")
for p in $(seq $((BASE + 10)) $((BASE + 21))); do
	nm_config=$(sed "s|\"listen\": \[\"127.0.0.1:$p\"\]|\"listen\": [\"127.0.0.1:$((p + 100))\"]|" <<<"$nm_config")
done
echo "$nm_config" >"$tmp/caddy-nm.json"
mkdir -p "$tmp/home-nm"
HOME=$tmp/home-nm XDG_DATA_HOME=$tmp/home-nm XDG_CONFIG_HOME=$tmp/home-nm \
	"${pin_proxy[@]}" "$caddy" run --config "$tmp/caddy-nm.json" >"$tmp/caddy-nm.out" 2>&1 &
pids+=($!)
caddy_nm_pid=$!

cat >"$tmp/haproxy.cfg" <<EOF
global
	maxconn 4096
defaults
	mode http
	timeout connect 5s
	timeout client 30s
	timeout server 30s
frontend bench
	bind 127.0.0.1:$haproxy_port
	default_backend backends
backend backends
	balance roundrobin
	option httpchk GET /health
$(for i in "${!backend_ports[@]}"; do printf '\tserver b%d 127.0.0.1:%s check inter 5s\n' "$i" "${backend_ports[$i]}"; done)
EOF
"${pin_proxy[@]}" "$haproxy_bin" -f "$tmp/haproxy.cfg" -db >"$tmp/haproxy.log" 2>&1 &
pids+=($!)
haproxy_pid=$!

wait_for() { # what, command...
	local what=$1
	shift
	for _ in $(seq 1 200); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "timed out waiting for $what" >&2
	cat "$tmp/caddy.out" "$tmp/caddy.log" "$tmp/caddy-nm.out" "$tmp/caddy-nm.log" "$tmp/haproxy.log" 2>/dev/null | tail -30 >&2
	exit 1
}
wait_for "the backends" curl -fsS "http://127.0.0.1:${backend_ports[2]}/health"
wait_for "Caddy's admin endpoint" curl -fsS "http://127.0.0.1:$admin_port/config/"
wait_for "the second Caddy's admin endpoint" curl -fsS "http://127.0.0.1:$nm_admin_port/config/"

admin=http://127.0.0.1:$admin_port
targets_json=$(for p in "${backend_ports[@]}"; do printf '{"id": "127.0.0.1", "port": %s},' "$p"; done)
nm_admin=http://127.0.0.1:$nm_admin_port
for ag in "$admin bench-rr" "$admin bench-lor" "$admin bench-sticky" "$nm_admin bench-rr" "$nm_admin bench-lor" "$nm_admin bench-sticky"; do
	read -r a g <<<"$ag"
	curl -fsS -X POST "$a/target-groups/$g/targets" -H 'Content-Type: application/json' \
		-d "{\"targets\": [${targets_json%,}]}" >/dev/null
done
all_healthy() {
	for ag in "$admin bench-rr" "$admin bench-lor" "$admin bench-sticky" "$nm_admin bench-rr" "$nm_admin bench-lor" "$nm_admin bench-sticky"; do
		read -r a g <<<"$ag"
		[ "$(curl -fsS "$a/target-groups/$g/targets" | grep -o '"state": *"healthy"' | wc -l)" -eq "${#backend_ports[@]}" ] || return 1
	done
}
wait_for "the targets' first health checks" all_healthy
wait_for "HAProxy" curl -fsS "http://127.0.0.1:$haproxy_port/"

# The sticky configuration is measured on its sticky path: every request
# carries the AWSALB cookie of a first response.
cookie=$(curl -fsS -D - -o /dev/null "http://127.0.0.1:${port[tg-sticky]}/" | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: AWSALB=\([^;]*\).*/\1/p' | head -1)
[ -n "$cookie" ] || { echo "no AWSALB cookie from the sticky configuration" >&2; exit 1; }
pinned=$(curl -fsS -H "Cookie: AWSALB=$cookie" "http://127.0.0.1:${port[tg-sticky]}/")
for _ in 1 2 3; do
	[ "$(curl -fsS -H "Cookie: AWSALB=$cookie" "http://127.0.0.1:${port[tg-sticky]}/")" = "$pinned" ] ||
		{ echo "the AWSALB cookie does not pin its target" >&2; exit 1; }
done

# Caddy's own cookie policy, the stock way to be sticky, measured likewise
# with the cookie of a first response.
stock_cookie=$(curl -fsS -D - -o /dev/null "http://127.0.0.1:${port[stock-cookie]}/" | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: lb=\([^;]*\).*/\1/p' | head -1)
[ -n "$stock_cookie" ] || { echo "no lb cookie from Caddy's cookie policy" >&2; exit 1; }

# --- measurements ----------------------------------------------------------
results=${BENCH_RESULTS:-bench/results}
mkdir -p "$results"
rm -f "$results"/*.raw
raw=$results/runs.raw

# measure NAME SECONDS: one load run against configuration NAME; prints the
# RESULT line and keeps the client's whole output in bench/results/.
measure() {
	local name=$1 secs=$2 tag=$3
	local url="http://127.0.0.1:${port[$name]}/"
	local pin=("${pin_client[@]}")
	[ "$name" = direct ] && [ ${#pin_proxy[@]} -gt 0 ] && pin=("${pin_proxy[@]}")
	local hdr=()
	[ "$name" = tg-sticky ] && hdr=(-H "Cookie: AWSALB=$cookie")
	[ "$name" = stock-cookie ] && hdr=(-H "Cookie: lb=$stock_cookie")
	local out="$results/$name-$tag.raw"
	local server_pid=$caddy_pid before
	case $name in
	direct) server_pid=$backend_pid ;;
	haproxy) server_pid=$haproxy_pid ;;
	tg-rr-nm) server_pid=$caddy_nm_pid ;;
	esac
	before=$(cpu_ticks "$server_pid")
	if [ "$CLIENT" = loadgen ]; then
		"${pin[@]}" "$tmp/loadgen" run -url "$url" -c "$CONNECTIONS" -d "${secs}s" "${hdr[@]}" >"$out" 2>&1
	else
		"${pin[@]}" wrk -t "$client_threads" -c "$CONNECTIONS" -d "${secs}s" --latency -s bench/wrk-report.lua "${hdr[@]}" "$url" >"$out" 2>&1
	fi
	local after
	after=$(cpu_ticks "$server_pid")
	grep -q '^RESULT' "$out" || { cat "$out" >&2; exit 1; }
	# The server's CPU time per request (user + system), which the machine's
	# other tenants disturb far less than requests/s.
	awk -v t="$((after - before))" -v hz="$clk_tck" '/^RESULT/ {
		for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "requests") n = kv[2] }
		printf "%s server_cpu_us=%.2f\n", $0, (n > 0 ? t * 1e6 / hz / n : 0)
	}' "$out"
}

# cpu_ticks PID: user + system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk_tck=$(getconf CLK_TCK)

log "warm-up: ${WARMUP}s per configuration"
for name in "${configs[@]}"; do measure "$name" "$WARMUP" warmup >/dev/null; done

n=${#configs[@]}
for round in $(seq 1 "$ROUNDS"); do
	order=()
	for i in $(seq 0 $((n - 1))); do order+=("${configs[$(((i + round - 1) % n))]}"); done
	log "round $round/$ROUNDS: ${order[*]}"
	for name in "${order[@]}"; do
		line=$(measure "$name" "$DURATION" "r$round") && [ -n "$line" ] || { echo "run of $name failed" >&2; exit 1; }
		echo "round=$round target=$name $line" >>"$raw"
		printf '   %-10s %s\n' "$name" "$(echo "$line" | sed 's/.*rps=\([0-9.]*\).*p50_us=\([0-9]*\).*p99_us=\([0-9]*\).*server_cpu_us=\([0-9.]*\).*/\1 req\/s  p50 \2us  p99 \3us  server CPU \4us\/req/')" >&2
		sleep 1
	done
done

if [ "$PROFILE" = 1 ]; then
	for name in stock tg-rr tg-lor tg-sticky tg-sticky-new dyn-rr dyn-lor dyn-sticky-new stock-cookie stock-cookie-new; do
		[[ " ${configs[*]} " == *" $name "* ]] || continue
		log "CPU profile of Caddy under $name"
		curl -fsS -o "$results/$name.prof" "$admin/debug/pprof/profile?seconds=10" &
		cpid=$!
		measure "$name" 12 profile >/dev/null
		wait "$cpid"
		go tool pprof -top -nodecount=40 "$caddy" "$results/$name.prof" >"$results/$name-top.raw" 2>/dev/null || true
	done
fi

errors=$(grep -c '"level":"\(error\|panic\|fatal\)"' "$tmp/caddy.log" 2>/dev/null || true)
if [ "$CLIENT" = wrk ]; then
	client_version=$({ wrk -v 2>&1 || true; } | head -1 | awk '{print $1, $2}')
else
	client_version="cmd/loadgen"
fi
"$tmp/loadgen" report -in "$raw" -out "$OUT" \
	-meta "command=\`make bench\` (BENCH_ROUNDS=$ROUNDS BENCH_DURATION=$DURATION BENCH_CONNECTIONS=$CONNECTIONS${BENCH_CONFIGS:+ BENCH_CONFIGS=\"$BENCH_CONFIGS\"})" \
	-meta "load=$CONNECTIONS connections, ${DURATION}s per run, $ROUNDS rounds in rotated order after a ${WARMUP}s warm-up of each; GET / answered with ~35 bytes by cmd/demo-backend" \
	-meta "machine=$ncpu CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -sr)" \
	-meta "CPU pinning=$layout" \
	-meta "versions=$("$caddy" version | awk '{print "Caddy", $1}'), $(go version | awk '{print $3}'), $("$haproxy_bin" -v | head -1 | awk '{print "HAProxy", $3}'), $client_version" \
	-meta "configurations=one Caddy process, one server per configuration; target groups through the target_group handler, health checks every 5s (the stock reverse_proxy has active health checks every 5s too); HAProxy default settings with roundrobin and checks every 5s; lb_cookie measured with the AWSALB cookie of a first response on every request (the *-new configurations: no cookie, a new one sealed on every response), Caddy's cookie policy likewise with its lb cookie; dynamic: reverse_proxy with dynamic target_group and lb_policy target_group on the same groups" \
	-meta "Caddy errors logged during the run=$errors"
log "wrote $OUT"
cat "$OUT"
