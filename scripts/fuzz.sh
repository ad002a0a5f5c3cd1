#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for a while, one after the
# other, and prints a table of seconds, executions and crashes per target.
#
#   make fuzz                               # each target 300 s
#   FUZZ_SECONDS=60 make fuzz               # each target 60 s
#   scripts/fuzz.sh redis_request config    # only these
#
# Installs cargo-fuzz with `cargo install` when it is missing. Each target
# runs through fuzz/run.sh (seeds, dictionary, no network); its full
# libFuzzer output goes to $FUZZ_LOG_DIR/<target>.log (default
# fuzz/work/logs, ignored by git) and the summary to stdout, so
# `make fuzz > summary.txt` keeps the table. Exit status 1 when a target
# crashed or failed to run (its input is in fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-300}
logdir=${FUZZ_LOG_DIR:-fuzz/work/logs}
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(redis_request redis_response memcache_request memcache_response config)
fi
case $seconds in
'' | *[!0-9]*)
    echo "fuzz: FUZZ_SECONDS must be a number of seconds, not '$seconds'" >&2
    exit 2
    ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi

mkdir -p "$logdir"
rows=()
failed=0
for t in "${targets[@]}"; do
    if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
        echo "fuzz: no target '$t' in fuzz/fuzz_targets/" >&2
        exit 2
    fi
    log="$logdir/$t.log"
    echo "fuzz: $t for $seconds s (log: $log)" >&2
    status=0
    bash fuzz/run.sh "$t" "$seconds" >"$log" 2>&1 || status=$?
    # libFuzzer's -print_final_stats=1 lines, and its closing "Done N runs in
    # S second(s)" line; a crash ends the run before "Done".
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    crashes=$(grep -c -E '^==[0-9]+== ERROR: libFuzzer|^SUMMARY: libFuzzer' "$log" || true)
    if [ "$status" -ne 0 ]; then
        failed=1
        [ "$crashes" -eq 0 ] && crashes="? (exit $status, see $log)"
    fi
    rows+=("$(printf '| `%s` | %s | %s | %s |' "$t" "${took:-?}" "${execs:-?}" "$crashes")")
done

echo "FUZZ_SECONDS=$seconds scripts/fuzz.sh ${targets[*]}"
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| target | seconds | executions | crashes |"
echo "| --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
exit "$failed"
