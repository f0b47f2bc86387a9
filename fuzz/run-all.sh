#!/usr/bin/env sh
# Runs every cargo-fuzz target for SECONDS each (default 20) on stable (`-s none`: no
# sanitizer, so cargo-fuzz passes no nightly `-Z` flag and RUSTC_BOOTSTRAP is not needed;
# the coverage instrumentation it uses is stable `-C` flags), starting from the committed seed corpus
# (copied, so runs never dirty the repo), and prints the executions per target. Exits non-zero
# on the first crash (the reproducer is left in fuzz/artifacts/TARGET/).
#
#   fuzz/run-all.sh 20               # release build (cargo-fuzz's default: opt + debug asserts)
#   FUZZ_DEV=1 fuzz/run-all.sh 20    # CI: unoptimised build: a cheaper cold build, far fewer
#                                    # executions per second (figures: docs/reliability.md)
#   FUZZ_RUNS=N                      # also stop a target after N executions (default: no cap)
#
# The build goes to fuzz/target (or CARGO_TARGET_DIR). Timings: docs/reliability.md.
set -eu
SECONDS_EACH="${1:-20}"
RUNS="${FUZZ_RUNS:--1}"
cd "$(dirname "$0")"
TARGETS="api_response config_parse cron_parse job_state manifest_parse emulator_query emulator_request"
set -- -s none
if [ -n "${FUZZ_DEV:-}" ]; then
    set -- "$@" --dev
fi
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    set -- "$@" --target-dir "$CARGO_TARGET_DIR"
fi
START=$(date +%s)
cargo fuzz build "$@"
echo "fuzz build: $(( $(date +%s) - START )) s"
WORK="${TMPDIR:-/tmp}/tcb-fuzz-corpus.$$"
trap 'rm -rf "$WORK"' EXIT
for t in $TARGETS; do
    mkdir -p "$WORK/$t"
    cp corpus/"$t"/* "$WORK/$t"/ 2>/dev/null || true
    LOG="$WORK/$t.log"
    # The same flags as the build, or cargo-fuzz would build another profile first.
    if ! cargo fuzz run "$@" "$t" "$WORK/$t" -- \
        -max_total_time="$SECONDS_EACH" -runs="$RUNS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$LOG" 2>&1; then
        tail -n 40 "$LOG"
        echo "fuzz target $t FAILED (artifacts in fuzz/artifacts/$t/)"
        exit 1
    fi
    EXECS=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$LOG" | grep -o '[0-9]*$' || echo "?")
    COV=$(grep -o 'cov: [0-9]*' "$LOG" | tail -n 1 || true)
    echo "fuzz $t: ${EXECS} executions in ${SECONDS_EACH}s, ${COV}, 0 crashes"
done
