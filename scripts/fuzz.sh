#!/usr/bin/env bash
# Fuzz each target named in $@ (package:FuzzName) for FUZZTIME.
#
# A duration -fuzztime races Go's fuzzing coordinator: when the deadline
# fires while a worker is mid-call, go test can fail with a bare "context
# deadline exceeded" and no failing input (golang/go#75804). Such a run is
# fuzzed once more; any other failure, and a failing input above all, fails
# at once.
set -uo pipefail

fuzztime="${FUZZTIME:-2m}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

fuzz_one() {
	go test "$1" -run '^$' -fuzz "^$2\$" -fuzztime "$fuzztime" 2>&1 | tee "$log"
	return "${PIPESTATUS[0]}"
}

# deadline_only says whether the run in $log failed only at the deadline.
deadline_only() {
	grep -q '^    context deadline exceeded$' "$log" &&
		! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:|hung or terminated' "$log"
}

for t in "$@"; do
	pkg=${t%%:*}
	name=${t#*:}
	echo "== $name ($pkg, $fuzztime)"
	if fuzz_one "$pkg" "$name"; then
		# A misspelt name fuzzes nothing and passes.
		if grep -q 'no fuzz tests to fuzz' "$log"; then
			echo "== $pkg has no fuzz target $name" >&2
			exit 1
		fi
		continue
	fi
	if deadline_only; then
		echo "== $name stopped at the -fuzztime deadline with nothing found (Go's coordinator race); fuzzing it once more"
		fuzz_one "$pkg" "$name" && continue
	fi
	exit 1
done
