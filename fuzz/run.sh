#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 20), failing on any
# crash, panic, reference mismatch or hang (> 10 s for one input).
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
for target in $(cargo +nightly fuzz list); do
    mkdir -p "$work/$target"
    log="$work/$target.log"
    echo "fuzz: $target for ${secs}s"
    if ! cargo +nightly fuzz run -s "$sanitizer" "$target" "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz: $target FAILED (artifacts in fuzz/artifacts/$target/)"
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    echo "fuzz: $target ok, ${runs:-?} executions"
    total=$((total + ${runs:-0}))
done
echo "fuzz: all targets ok, $total executions"
