#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 20), failing on any
# crash, panic, reference mismatch or hang (> 10 s for one input). Every target runs
# even when an earlier one failed; the last line names the failures.
#
#   bash fuzz/run.sh [SECONDS]
#
# Installs cargo-fuzz when it is missing. Needs the nightly toolchain (libFuzzer's
# coverage instrumentation). New inputs go to a temporary directory, so the committed
# seed corpus (fuzz/corpus/<target>/) stays as it is; crashes are written to
# fuzz/artifacts/<target>/ (ignored by git) and can be replayed with
#   cargo +nightly fuzz run -s none <target> fuzz/artifacts/<target>/<file>
#
# Sanitizer: none by default (FUZZ_SANITIZER=address to change). The crate forbids
# unsafe code, so what the targets look for are panics (overflow checks and debug
# assertions are on in fuzz/Cargo.toml), hangs and wrong results; without ASan each
# execution is about 5x faster.
set -euo pipefail

secs=${1:-20}
sanitizer=${FUZZ_SANITIZER:-none}
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build -s "$sanitizer"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
total=0
failed=()
for target in $(cargo +nightly fuzz list); do
    mkdir -p "$work/$target"
    log="$work/$target.log"
    echo "fuzz: $target for ${secs}s"
    if ! cargo +nightly fuzz run -s "$sanitizer" "$target" "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        grep -A 2 -E 'panicked at|ERROR: libFuzzer' "$log" | head -n 20 || true
        grep -v -E '^#[0-9]+ +(NEW|REDUCE|pulse|RELOAD)' "$log" | grep -A 10 'Test unit written' || tail -n 40 "$log"
        echo "fuzz: $target FAILED (artifacts in fuzz/artifacts/$target/)"
        failed+=("$target")
        continue
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    echo "fuzz: $target ok, ${runs:-?} executions"
    total=$((total + ${runs:-0}))
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} ($total executions in the others)"
    exit 1
fi
echo "fuzz: all targets ok, $total executions"
