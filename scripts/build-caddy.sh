#!/usr/bin/env bash
# Builds Caddy with this plugin into bin/caddy (or $CADDY_OUTPUT), the way
# users do: with xcaddy. XCADDY_RACE_DETECTOR=1 builds it with the race
# detector. CADDY_WITH adds further modules, a space-separated list of
# module@version, each passed to xcaddy as one more --with (the fleet suite
# needs github.com/pberkel/caddy-storage-redis@v1.8.1).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
CADDY_VERSION=${CADDY_VERSION:-v2.11.9}
mkdir -p bin
if [ ! -x bin/xcaddy ]; then
	(cd tools/xcaddy && go build -o "$root/bin/xcaddy" github.com/caddyserver/xcaddy/cmd/xcaddy)
fi
# xcaddy asks the module proxy for this local module's version list, which
# some proxies refuse; "|off" lets it fall through to the local checkout.
export GOPROXY=${XCADDY_GOPROXY:-https://proxy.golang.org|off}
with=(--with "github.com/caddy-targetgroup/caddy-targetgroup=$root")
read -r -a extra <<<"${CADDY_WITH:-}"
for module in ${extra[@]+"${extra[@]}"}; do
	with+=(--with "$module")
done
exec ./bin/xcaddy build "$CADDY_VERSION" \
	--output "${CADDY_OUTPUT:-$root/bin/caddy}" \
	"${with[@]}"
