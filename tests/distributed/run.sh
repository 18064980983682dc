#!/usr/bin/env bash
# Scale-out checks: the multi-core kernels (feature `rayon`) and SyncBatchNorm over
# MPI (integrations/mpi). Installs Debian's OpenMPI and clang (rsmpi's bindgen) when
# missing, then:
#   - cargo test --features rayon: tests/parallel.rs (1/2/3 threads, the same bits;
#     the oracle), tests/distributed.rs, and the parallel module's doc examples;
#   - integrations/mpi's sync_check on 1, 2, 3 and 4 ranks (oversubscribed), each
#     twice: every run passes (the oracle of the whole batch, the same bits on every
#     rank, errors on every rank for bad input) and both runs print the same digests;
#   - its mlp_sync, the data-parallel demo, on 1 and 2 ranks against the one-process
#     network.
# The last line is "N passed, M failed"; the exit status is non-zero on any failure.
#
#   bash tests/distributed/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TERM_COLOR=never
# We run as root in CI; OpenMPI refuses that unless told.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
TIMEOUT="${MPI_TIMEOUT:-300}"   # seconds per mpirun: a hang is a failure, not a stall

passed=0
failed=0
log() { printf '[distributed] %s\n' "$*"; }
pass() { passed=$((passed + 1)); log "ok   $*"; }
fail() { failed=$((failed + 1)); log "FAIL $*"; }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

# ------------------------------------------------------------------ packages (Debian)
need=()
for p in libopenmpi-dev openmpi-bin libclang-dev clang; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >/tmp/distributed-apt.log 2>&1; then
        tail -20 /tmp/distributed-apt.log
        fail "apt-get install ${need[*]}"
        finish
    fi
fi

# ------------------------------------------------------------------ multi-core
if cargo test --features rayon --test parallel --test distributed 2>&1 | tee /tmp/distributed-tests.log | grep -E '^test |test result'; then
    grep -q 'test result: FAILED' /tmp/distributed-tests.log && fail "cargo test --features rayon (parallel, distributed)" \
        || pass "cargo test --features rayon --test parallel --test distributed"
else
    fail "cargo test --features rayon (parallel, distributed)"
fi
if cargo test --features rayon --doc parallel >/tmp/distributed-doc.log 2>&1; then
    pass "doc examples of batchnorm::parallel ($(grep -o '[0-9]* passed' /tmp/distributed-doc.log | head -1))"
else
    tail -30 /tmp/distributed-doc.log
    fail "doc examples of batchnorm::parallel"
fi

# ------------------------------------------------------------------ MPI
if ! cargo build --release -p batchnorm-mpi --examples >/tmp/distributed-build.log 2>&1; then
    tail -30 /tmp/distributed-build.log
    fail "cargo build -p batchnorm-mpi --examples"
    finish
fi
bin=target/release/examples
mpi() { timeout "$TIMEOUT" mpirun --oversubscribe --allow-run-as-root -n "$@"; }

for n in 1 2 3 4; do
    digests=()
    for run in 1 2; do
        out=$(mpi "$n" "$bin/sync_check" 2>&1)
        status=$?
        if [ $status -eq 0 ] && grep -q '^sync_check: [0-9]* passed, 0 failed$' <<<"$out"; then
            pass "sync_check on $n ranks, run $run: $(grep '^sync_check:' <<<"$out" | sed 's/^sync_check: //')"
        else
            echo "$out" | grep -v '^ok' | tail -30
            fail "sync_check on $n ranks, run $run (exit $status)"
        fi
        digests+=("$(grep '^digest' <<<"$out")")
    done
    if [ -n "${digests[0]}" ] && [ "${digests[0]}" = "${digests[1]}" ]; then
        pass "sync_check on $n ranks: the same bits on both runs"
    else
        fail "sync_check on $n ranks: the runs differ"
    fi
done

for n in 1 2; do
    out=$(mpi "$n" "$bin/mlp_sync" 2>&1)
    status=$?
    if [ $status -eq 0 ] && grep -q '^mlp_sync: [0-9]* passed, 0 failed$' <<<"$out"; then
        pass "mlp_sync on $n ranks: $(grep ' ranks: test accuracy' <<<"$out")"
    else
        echo "$out" | tail -20
        fail "mlp_sync on $n ranks (exit $status)"
    fi
done

finish
