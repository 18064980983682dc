#!/usr/bin/env bash
# Builds batchnorm's firmware self-checks for Cortex-M4F (thumbv7em-none-eabihf) and
# AArch64 (aarch64-unknown-none), runs each under QEMU with semihosting, and fails
# unless both print PASS and exit 0. Recipe: Debian's rustc-web/rust-web-src 1.96 with
# -Zbuild-std=core (RUSTC_BOOTSTRAP=1), linked with ld.lld-19.
#
#   bash tests/embedded/run.sh              build, run both self-checks
#   bash tests/embedded/run.sh --footprint  also: the self-checks at opt-level "s", the
#                                           footprint binaries (flash per kernel family,
#                                           opt "s" and 3), stack per kernel at both
#                                           levels, the size targets, the largest
#                                           functions and AArch64's NEON use
#
# The last line is "[embedded] N passed, 0 failed (...)", the self-checks' count.
# FOOTPRINT_STRICT=1 makes a missed size target (see below) an error.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
footprint=0
for arg in "$@"; do
    case "$arg" in
        --footprint) footprint=1 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg'" >&2; exit 2 ;;
    esac
done

QEMU_TIMEOUT="${QEMU_TIMEOUT:-300}"   # seconds per firmware run
log() { printf '[embedded] %s\n' "$*"; }
die() { printf '[embedded] ERROR: %s\n' "$*" >&2; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/../apt.sh"

# ---------------------------------------------------------------- toolchain (Debian)
need_pkgs=()
if command -v dpkg-query >/dev/null; then
    want=(rustc-web cargo-web rust-web-src lld-19 qemu-system-arm)
    [ "$footprint" = 1 ] && want+=(binutils-arm-none-eabi binutils-aarch64-linux-gnu)
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
    done
else
    # Not Debian: the tools must already be there.
    for c in /usr/bin/rustc /usr/bin/cargo ld.lld-19 qemu-system-arm qemu-system-aarch64; do
        command -v "$c" >/dev/null || die "$c not found and no dpkg here: see docs/embedded.md for the toolchain"
    done
fi
apt_install ${need_pkgs[@]+"${need_pkgs[@]}"}
if command -v dpkg-query >/dev/null; then
    # rustc and the library source build-std compiles must be the same release.
    v_rustc="$(dpkg-query -W -f='${Version}' rustc-web)"
    v_src="$(dpkg-query -W -f='${Version}' rust-web-src)"
    [ "$v_rustc" = "$v_src" ] || die "rustc-web $v_rustc and rust-web-src $v_src differ: upgrade both"
fi
[ -d /usr/lib/rustlib/src/rust/library/core ] || die "rust-web-src is installed but /usr/lib/rustlib/src/rust/library/core is missing"
log "$(/usr/bin/rustc --version); $(/usr/bin/cargo --version); $(qemu-system-arm --version | sed -n 1p)"

# ---------------------------------------------------------------- build environment
# The firmware crates' .cargo/config.toml hold target, linker, link script and runner
# flags; a RUSTFLAGS from the caller (e.g. CI's "-D warnings") would replace the
# target's rustflags and drop the link script, so clear everything that overrides them.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET \
      CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR RUSTC RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER RUSTUP_TOOLCHAIN
export RUSTC_BOOTSTRAP=1            # unlocks -Zbuild-std on Debian's stable rustc
CARGO=/usr/bin/cargo

build() {  # build DIR PROFILE [cargo args...]
    local dir="$1" profile="$2"; shift 2
    log "building $dir ($profile profile) $*"
    (cd "$here/$dir" && "$CARGO" build --profile "$profile" --locked -q "$@") || die "build of $dir failed"
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0 failed=0 counts=""

run_qemu() {  # run_qemu NAME ELF LOG QUIET QEMU-COMMAND...: output to LOG (and the terminal unless QUIET=1)
    local name="$1" elf="$2" out="$3" quiet="$4"; shift 4
    local status=0
    log "running $name: $* $elf"
    if [ "$quiet" = 1 ]; then
        timeout -k 10 "$QEMU_TIMEOUT" "$@" "$elf" </dev/null >"$out" 2>&1 || status=$?
    else
        timeout -k 10 "$QEMU_TIMEOUT" "$@" "$elf" </dev/null 2>&1 | tee "$out" || status=$?
    fi
    if [ "$quiet" = 1 ] && [ "$status" != 0 ]; then
        grep -v '^ok  ' "$out" | tail -n 40 || true
    fi
    if [ "$status" = 124 ] || [ "$status" = 137 ]; then
        die "$name: QEMU did not finish within ${QEMU_TIMEOUT}s"
    fi
    [ "$status" = 0 ] || die "$name: firmware exited with status $status"
    if ! tail -n 1 "$out" | tr -d '\r' | grep -qx 'PASS'; then
        die "$name: exit status 0 but the last line is not PASS"
    fi
    local line p f
    line="$(tr -d '\r' <"$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1)"
    [ -n "$line" ] || die "$name: no 'N passed, M failed' line"
    p="${line%% passed*}"; f="${line#*passed, }"; f="${f%% failed*}"
    passed=$((passed + p)); failed=$((failed + f))
    counts="${counts:+$counts, }$name $p"
    log "$name: PASS ($line)"
}

QEMU_M4=(qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic
         -semihosting-config enable=on,target=native -kernel)
QEMU_A64=(qemu-system-aarch64 -M virt -cpu cortex-a53 -nographic -nic none
          -semihosting-config enable=on,target=native -kernel)
M4_ELF="$here/cortex-m4f/target/thumbv7em-none-eabihf"
A64_ELF="$here/aarch64/target/aarch64-unknown-none"

# ---------------------------------------------------------------- self-checks
build cortex-m4f release --bin batchnorm-fw-cortex-m4f
build aarch64 release --bin batchnorm-fw-aarch64
run_qemu cortex-m4f "$M4_ELF/release/batchnorm-fw-cortex-m4f" "$work/cortex-m4f.release.log" 0 "${QEMU_M4[@]}"
run_qemu aarch64 "$A64_ELF/release/batchnorm-fw-aarch64" "$work/aarch64.release.log" 0 "${QEMU_A64[@]}"

# ---------------------------------------------------------------- footprint (optional)
run_status() {  # run_status NAME ELF QEMU-COMMAND...: exit status 0 required, no output
    local name="$1" elf="$2"; shift 2
    local status=0
    timeout -k 10 "$QEMU_TIMEOUT" "$@" "$elf" </dev/null >/dev/null 2>&1 || status=$?
    [ "$status" = 0 ] || die "$name: footprint firmware exited with status $status"
}

section_sizes() {  # section_sizes SIZE-TOOL ELF -> "text rodata data bss vector_table"
    "$1" -A "$2" | awk '
        $1 == ".text" { t = $2 } $1 == ".rodata" { r = $2 } $1 == ".data" { d = $2 }
        $1 == ".bss" { b = $2 } $1 == ".vector_table" { v = $2 }
        END { printf "%d %d %d %d %d\n", t, r, d, b, v }'
}

kib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1024 }'; }

# Stack lines of a self-check log: "label<TAB>channels-first<TAB>channels-last"; a
# kernel without layouts (fold's "(weights)", row norms' "(rows)", clipping's "(flat)")
# has "-" as its second figure.
stack_lines() {
    tr -d '\r' <"$1" | awk '
        /^stack / && $NF == "B" && $(NF - 2) == "B" {
            l = $2; for (i = 3; i <= NF - 4; i++) l = l " " $i
            printf "%s\t%s\t%s\n", l, $(NF - 3), $(NF - 1)
        }
        /^stack / && $NF ~ /^\([a-z]+\)$/ {
            l = $2; for (i = 3; i <= NF - 3; i++) l = l " " $i
            printf "%s\t%s\t-\n", l, $(NF - 2)
        }'
}

FP_BINS=(fp_none fp_eval fp_moments fp_train fp_backward fp_fused fp_renorm fp_fold
         fp_rownorm fp_groupnorm fp_clip fp_bn fp_all)
fp_label() {
    case "$1" in
        fp_none) echo "runtime only" ;; fp_eval) echo "eval only" ;; fp_moments) echo "moments" ;;
        fp_train) echo "train, train_in_place" ;; fp_backward) echo "backward, backward_eval" ;;
        fp_fused) echo "fused (4 entry points)" ;; fp_renorm) echo "train_renorm, backward_renorm" ;;
        fp_fold) echo "fold (2 entry points)" ;;
        fp_rownorm) echo "LayerNorm, RmsNorm" ;; fp_groupnorm) echo "GroupNorm, InstanceNorm" ;;
        fp_clip) echo "gradient clipping (3 fns)" ;; fp_bn) echo "all batch-norm kernels" ;;
        fp_all) echo "all kernels" ;;
    esac
}
TARGETS=(cortex-m4f aarch64)
PROFILES=(size release)
prof_label() { if [ "$1" = size ]; then echo 'opt "s"'; else echo 'opt 3'; fi; }
triple_of() { if [ "$1" = cortex-m4f ]; then echo thumbv7em-none-eabihf; else echo aarch64-unknown-none; fi; }

if [ "$footprint" = 1 ]; then
    for prof in release size; do
        build cortex-m4f "$prof" --bins
        build aarch64 "$prof" --bins
    done
    # The self-checks at opt-level "s" (quiet): their stack figures, and their checks.
    run_qemu 'cortex-m4f (opt "s")' "$M4_ELF/size/batchnorm-fw-cortex-m4f" "$work/cortex-m4f.size.log" 1 "${QEMU_M4[@]}"
    run_qemu 'aarch64 (opt "s")' "$A64_ELF/size/batchnorm-fw-aarch64" "$work/aarch64.size.log" 1 "${QEMU_A64[@]}"

    declare -A crate flash_of
    echo
    echo "Footprint (bytes; flash = vector table + .text + .rodata + .data, static RAM = .data + .bss;"
    echo "'crate' = that binary minus fp_none, which holds only the runtime):"
    printf '| %-22s | %-9s | %-29s | %8s | %7s | %8s | %10s | %11s |\n' \
        target profile firmware .text .rodata flash "static RAM" "crate flash"
    printf '|%s|\n' "------------------------|-----------|-------------------------------|----------|---------|----------|------------|-------------"
    for tgt in "${TARGETS[@]}"; do
        triple="$(triple_of "$tgt")"
        if [ "$tgt" = cortex-m4f ]; then size_tool=arm-none-eabi-size; qemu=("${QEMU_M4[@]}")
        else size_tool=aarch64-linux-gnu-size; qemu=("${QEMU_A64[@]}"); fi
        for prof in "${PROFILES[@]}"; do
            base=0
            for bin in "${FP_BINS[@]}"; do
                elf="$here/$tgt/target/$triple/$prof/$bin"
                run_status "$tgt $prof $bin" "$elf" "${qemu[@]}"
                read -r t r d b v < <(section_sizes "$size_tool" "$elf")
                flash=$((v + t + r + d))
                [ "$bin" = fp_none ] && base=$flash
                crate[$tgt,$prof,$bin]=$((flash - base))
                flash_of[$tgt,$prof,$bin]=$flash
                printf '| %-22s | %-9s | %-29s | %8d | %7d | %8d | %10d | %11d |\n' \
                    "$triple" "$(prof_label "$prof")" "$(fp_label "$bin")" "$t" "$r" "$flash" $((d + b)) $((flash - base))
            done
        done
    done

    echo
    echo "Flash per kernel family (bytes of the crate: the firmware minus the runtime-only one;"
    echo "families share the engine, so they do not add up to 'all kernels'):"
    echo
    printf '| %-29s | %18s | %18s | %18s | %18s |\n' "kernels" 'Cortex-M4F opt "s"' "Cortex-M4F opt 3" 'AArch64 opt "s"' "AArch64 opt 3"
    printf '|%s|\n' "-------------------------------|-------------------:|-------------------:|-------------------:|-------------------:"
    for bin in "${FP_BINS[@]:1}"; do
        row=()
        for tgt in "${TARGETS[@]}"; do
            for prof in "${PROFILES[@]}"; do
                v="${crate[$tgt,$prof,$bin]}"
                row+=("$v ($(kib "$v") KiB)")
            done
        done
        printf '| %-29s | %18s | %18s | %18s | %18s |\n' "$(fp_label "$bin")" "${row[@]}"
    done

    echo
    echo "Stack per call (bytes below the caller's stack pointer, high-water mark of painted stack,"
    echo "resolution 128 B; channels-first / channels-last, the worst over the self-check's cases):"
    echo
    printf '| %-30s | %18s | %18s | %18s | %18s |\n' "kernel" 'Cortex-M4F opt "s"' "Cortex-M4F opt 3" 'AArch64 opt "s"' "AArch64 opt 3"
    printf '|%s|\n' "--------------------------------|-------------------:|-------------------:|-------------------:|-------------------:"
    for tgt in "${TARGETS[@]}"; do
        for prof in "${PROFILES[@]}"; do
            stack_lines "$work/$tgt.$prof.log" >"$work/$tgt.$prof.stack"
        done
    done
    while IFS=$'\t' read -r label _ _; do
        row=()
        for tgt in "${TARGETS[@]}"; do
            for prof in "${PROFILES[@]}"; do
                v="$(awk -F'\t' -v l="$label" '$1 == l { print ($3 == "-") ? $2 : $2 " / " $3 }' "$work/$tgt.$prof.stack")"
                row+=("${v:-?}")
            done
        done
        printf '| %-30s | %18s | %18s | %18s | %18s |\n' "$label" "${row[@]}"
    done <"$work/cortex-m4f.size.stack"

    # The targets (Cortex-M4F, opt-level "s"; 1 KB = 1024 bytes).
    echo
    echo 'Size targets (Cortex-M4F, opt-level "s"; KB = 1024 bytes):'
    missed=0
    target_line() {  # target_line WHAT VALUE LIMIT
        local verdict="met"
        [ "$2" -le "$3" ] || { verdict="MISSED"; missed=$((missed + 1)); }
        printf '  %-44s %7d B (%5s KiB)  limit %6d B (%4s KiB)  %s\n' "$1" "$2" "$(kib "$2")" "$3" "$(kib "$3")" "$verdict"
    }
    # Issue 10's targets: batch norm's kernels (the neighbours came after it).
    target_line "all batch-norm kernels, flash" "${crate[cortex-m4f,size,fp_bn]}" $((48 * 1024))
    target_line "eval only, flash" "${crate[cortex-m4f,size,fp_eval]}" $((6 * 1024))
    eval_stack="$(awk -F'\t' '$1 == "eval" { print ($2 > $3) ? $2 : $3 }' "$work/cortex-m4f.size.stack")"
    target_line "eval, stack (worst layout)" "${eval_stack:-999999}" 1024

    # Where the flash goes: the largest functions (code symbols, sizes from the symbol
    # table; with LTO the public entry points are mostly inlined into their caller,
    # here the footprint body).
    largest() {  # largest NM ELF COUNT
        "$1" -C --size-sort -S -t d "$2" \
            | awk '$3 ~ /^[tTwW]$/ { s = $2 + 0; $1 = ""; $2 = ""; $3 = ""; sub(/^ +/, ""); printf "  %7d  %s\n", s, $0 }' \
            | sort -k1,1nr | awk -v n="$3" 'NR <= n'  # reads all: no SIGPIPE under pipefail
    }
    echo
    echo 'Largest functions, Cortex-M4F all batch-norm kernels at opt "s" (arm-none-eabi-nm --size-sort; bytes):'
    largest arm-none-eabi-nm "$M4_ELF/size/fp_bn" 25
    echo
    echo 'Largest functions, Cortex-M4F eval only at opt "s" (bytes):'
    largest arm-none-eabi-nm "$M4_ELF/size/fp_eval" 10
    echo
    echo 'Largest functions, AArch64 all kernels at opt 3 (aarch64-linux-gnu-nm --size-sort; bytes):'
    largest aarch64-linux-gnu-nm "$A64_ELF/release/fp_all" 15

    # NEON: the kernels' hot loops on AArch64 must do their arithmetic on v*.4s.
    echo
    dis="$work/fp_all.dis"
    aarch64-linux-gnu-objdump -d --no-show-raw-insn -C "$A64_ELF/release/fp_all" >"$dis"
    neon_report="$(awk '
        /^[0-9a-f]+ <.*>:$/ { fn = $0; sub(/^[0-9a-f]+ </, "", fn); sub(/>:$/, "", fn); next }
        fn ~ /^(<)?batchnorm::/ && $2 ~ /^f(add|mla|mul|sub|mls|madd|msub|div|sqrt)$/ {
            if ($3 ~ /\.4s/) vec[fn]++
            else if ($3 ~ /^s[0-9]/) sca[fn]++
            else if ($3 ~ /^d[0-9]/ || $3 ~ /\.2d/) dbl[fn]++
            else next
            seen[fn] = 1
        }
        END { for (f in seen) printf "%7d %7d %7d  %s\n", vec[f], sca[f], dbl[f], f }' "$dis" | sort -k1,1nr -k3,3nr)"
    echo "AArch64 fp_all (opt 3): FP arithmetic instructions per batchnorm function"
    echo "  f32 v*.4s  f32 scalar  f64 (d or v*.2d)  function"
    echo "$neon_report" | sed 's/^/  /'
    total_vec="$(echo "$neon_report" | awk '{ s += $1 } END { print s + 0 }')"
    [ "$total_vec" -gt 0 ] || die "no NEON (v*.4s) arithmetic in batchnorm's AArch64 code"
    # The engine's walks (map and reduce of every kernel) are the hot loops: each must
    # compute on vectors, none on scalar f32.
    scalar_loops="$(echo "$neon_report" | awk '$4 ~ /^batchnorm::engine::((runs|lines)::)?(map|reduce)::/ && ($1 == 0 || $2 > 0)')"
    [ -z "$scalar_loops" ] || { echo "$scalar_loops"; die "engine loops without NEON or with scalar f32 arithmetic (above)"; }
    log "NEON: $total_vec vector f32 instructions on v*.4s in batchnorm's code; every engine loop on v*.4s"
    if [ "$missed" -gt 0 ]; then
        log "$missed size target(s) missed (see 'Size targets' above)"
        [ "${FOOTPRINT_STRICT:-0}" = 1 ] && die "FOOTPRINT_STRICT=1: size targets missed"
    fi
fi

[ "$failed" = 0 ] || die "$failed self-check(s) failed"
log "all embedded checks passed"
log "$passed passed, $failed failed ($counts)"
