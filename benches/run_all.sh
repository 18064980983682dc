#!/usr/bin/env bash
# The full comparison behind docs/performance.md's tables: benches/pytorch_compare.py
# on the default build, then on the native one (its own target dir, so that the two
# builds do not rebuild each other), then benches/readme_tables.py on both CSVs.
#
#   benches/run_all.sh                  # everything: a long run, on an otherwise idle machine
#   benches/run_all.sh T0 --samples=3   # smoke run (arguments go to pytorch_compare.py)
#
# Writes target/bench/{default,native}.csv (+ .json: versions and flags) and
# target/bench/tables.md, which it also prints. PYTHON picks the interpreter that has
# torch, numpy, onnx and onnxruntime (default: /work/venv/bin/python if present).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x /work/venv/bin/python ]]; then PYTHON=/work/venv/bin/python; else PYTHON=python3; fi
fi
out=target/bench
mkdir -p "$out"

echo "== default build" >&2
env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
    "$PYTHON" benches/pytorch_compare.py --csv-out="$out/default.csv" "$@"

echo "== native build (-C target-cpu=native, CARGO_TARGET_DIR=target/native)" >&2
env -u CARGO_ENCODED_RUSTFLAGS RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=target/native \
    "$PYTHON" benches/pytorch_compare.py --csv-out="$out/native.csv" "$@"

"$PYTHON" benches/readme_tables.py "$out/default.csv" "$out/native.csv" > "$out/tables.md"
cat "$out/tables.md"
