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
