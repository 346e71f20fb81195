# The two commands of the README: `make demo` and `make test`.
.PHONY: demo test caddy

# Build Caddy with the plugin and run the demo.
demo:
	scripts/demo.sh

# Run the whole test suite (CI runs exactly this).
test:
	scripts/test.sh

# Build bin/caddy with xcaddy.
caddy:
	scripts/build-caddy.sh

# Benchmarks and reliability (see the README).
.PHONY: bench reliability fuzz

# Requests/s and latency through target groups against Caddy's own
# reverse_proxy, HAProxy and the backend itself; writes bench/results.md.
bench:
	scripts/bench.sh

# The reliability suite at full length against a real Caddy process.
reliability:
	scripts/reliability.sh

# Every fuzz target for FUZZTIME each (go test -fuzz takes one at a time).
FUZZTIME ?= 2m
FUZZ_TARGETS = ./caddyfile:FuzzGlobalOption ./targetgroup:FuzzNewSpec ./targetgroup:FuzzAdminAPI \
	./targetgroup:FuzzELBv2 ./healthcheck:FuzzParseMatcher ./selection:FuzzOpen ./integration:FuzzStickyCookie \
	./integration:FuzzCookieValue
fuzz:
	@FUZZTIME=$(FUZZTIME) scripts/fuzz.sh $(FUZZ_TARGETS)
