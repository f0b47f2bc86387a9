#!/usr/bin/env sh
# Runs every cargo-fuzz target for SECONDS each (default 20) on stable (`-s none`: no
# sanitizer), starting from the committed seed corpus (copied, so runs never dirty the repo),
# and prints the executions per target. Exits non-zero on the first crash (the reproducer is
# left in fuzz/artifacts/TARGET/).
#   fuzz/run-all.sh 20          # CI: build (~1-2 min on 2 cores) + 5 targets x 20 s
set -eu
SECONDS_EACH="${1:-20}"
cd "$(dirname "$0")"
TARGETS="api_response config_parse job_state manifest_parse emulator_query"
cargo fuzz build -s none $TARGETS 2>/dev/null || cargo fuzz build -s none
WORK="${TMPDIR:-/tmp}/tcb-fuzz-corpus.$$"
trap 'rm -rf "$WORK"' EXIT
for t in $TARGETS; do
    mkdir -p "$WORK/$t"
    cp corpus/"$t"/* "$WORK/$t"/ 2>/dev/null || true
    LOG="$WORK/$t.log"
    if ! cargo fuzz run -s none "$t" "$WORK/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$LOG" 2>&1; then
        tail -n 40 "$LOG"
        echo "fuzz target $t FAILED (artifacts in fuzz/artifacts/$t/)"
        exit 1
    fi
    EXECS=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$LOG" | grep -o '[0-9]*$' || echo "?")
    COV=$(grep -o 'cov: [0-9]*' "$LOG" | tail -n 1 || true)
    echo "fuzz $t: ${EXECS} executions in ${SECONDS_EACH}s, ${COV}, 0 crashes"
done
