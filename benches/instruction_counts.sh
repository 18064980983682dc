#!/usr/bin/env bash
# Instructions per kernel call, this tree against another revision, for every
# bench_table row: callgrind counts what `bench_table --calls=N` runs inside `calls`
# (the kernel alone, not the setup), which a loaded machine does not disturb.
#
#   bash benches/instruction_counts.sh BASE [bench_table's selection: S5 --layout=NCHW …]
#
# Builds bench_table here and at BASE (a git worktree in a temporary directory, given
# this tree's bench_table and benches/common: one harness, two libraries), both in the
# default release build; prints one CSV row per bench row (shape, layout,
# kernel, instructions per call at BASE and here, their ratio) and then the geometric
# mean of the ratios. Needs valgrind (Debian package valgrind); installs nothing.
set -euo pipefail
base="${1:?usage: instruction_counts.sh BASE [bench_table arguments]}"
shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v valgrind >/dev/null || { echo "instruction_counts: valgrind not found" >&2; exit 1; }
CALLS="${CALLS:-20}"
# Each tree builds in its own target directory (they hold different libraries).
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR

work="$(mktemp -d)"
cleanup() { git -C "$root" worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
git -C "$root" worktree add --detach -q "$work/base" "$base"
cp "$root/examples/bench_table.rs" "$work/base/examples/"
rm -rf "$work/base/benches/common" && cp -r "$root/benches/common" "$work/base/benches/"
build() {  # build TREE OUT
    (cd "$1" && cargo build -q --release --example bench_table) >&2
    cp "$1/target/release/examples/bench_table" "$2"
}
build "$work/base" "$work/bench_base"
build "$root" "$work/bench_here"

count() {  # count BINARY SHAPE LAYOUT KERNEL -> instructions per call
    local ir
    ir="$(valgrind --tool=callgrind --callgrind-out-file=/dev/null --collect-atstart=no \
        --toggle-collect='*bench_table*calls*' "$1" "$2" "--layout=$3" "--kernel=$4" \
        "--calls=$CALLS" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')"
    echo $((ir / CALLS))
}

echo "shape,layout,kernel,base,here,ratio"
"$work/bench_here" --list "$@" | tail -n +2 | while IFS=, read -r shape layout kernel _; do
    a="$(count "$work/bench_base" "$shape" "$layout" "$kernel")"
    b="$(count "$work/bench_here" "$shape" "$layout" "$kernel")"
    awk -v s="$shape" -v l="$layout" -v k="$kernel" -v a="$a" -v b="$b" \
        'BEGIN { printf "%s,%s,%s,%d,%d,%.4f\n", s, l, k, a, b, b / a }'
done | tee "$work/rows.csv"
awk -F, '{ n++; s += log($6); if ($6 > hi) { hi = $6; w = $1 " " $2 " " $3 }
           if (lo == "" || $6 < lo) { lo = $6; v = $1 " " $2 " " $3 } }
    END { printf "instruction_counts: %d rows, here/base geometric mean %.4f, max %.4f (%s), min %.4f (%s)\n",
          n, exp(s / n), hi, w, lo, v }' "$work/rows.csv"
