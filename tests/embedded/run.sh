#!/usr/bin/env bash
# Builds batchnorm's firmware self-checks for Cortex-M4F (thumbv7em-none-eabihf) and
# AArch64 (aarch64-unknown-none), runs each under QEMU with semihosting, and fails
# unless both print PASS and exit 0. Recipe: Debian's rustc-web/rust-web-src 1.96 with
# -Zbuild-std=core (RUSTC_BOOTSTRAP=1), linked with ld.lld-19.
#
#   bash tests/embedded/run.sh              build, run both self-checks
#   bash tests/embedded/run.sh --footprint  also build the footprint binaries, print
#                                           flash/RAM sizes and check AArch64 NEON use
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
footprint=0
for arg in "$@"; do
    case "$arg" in
        --footprint) footprint=1 ;;
        -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg'" >&2; exit 2 ;;
    esac
done

QEMU_TIMEOUT="${QEMU_TIMEOUT:-300}"   # seconds per firmware run
log() { printf '[embedded] %s\n' "$*"; }
die() { printf '[embedded] ERROR: %s\n' "$*" >&2; exit 1; }

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
        command -v "$c" >/dev/null || die "$c not found and no dpkg here: see ../shared/EMBEDDED.md for the toolchain"
    done
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    log "installing missing Debian packages: ${need_pkgs[*]}"
    command -v apt-get >/dev/null || die "apt-get not found: install ${need_pkgs[*]} (Debian 12 bookworm-security) by hand"
    sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "not root and no sudo: install ${need_pkgs[*]} by hand"
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q >/dev/null || die "apt-get update failed"
    $sudo apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null \
        || die "apt-get install ${need_pkgs[*]} failed"
fi
if command -v dpkg-query >/dev/null; then
    # rustc and the library source build-std compiles must be the same release.
    v_rustc="$(dpkg-query -W -f='${Version}' rustc-web)"
    v_src="$(dpkg-query -W -f='${Version}' rust-web-src)"
    [ "$v_rustc" = "$v_src" ] || die "rustc-web $v_rustc and rust-web-src $v_src differ: upgrade both"
fi
[ -d /usr/lib/rustlib/src/rust/library/core ] || die "rust-web-src is installed but /usr/lib/rustlib/src/rust/library/core is missing"
log "$(/usr/bin/rustc --version); $(/usr/bin/cargo --version); $(qemu-system-arm --version | head -1)"

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

run_qemu() {  # run_qemu NAME ELF QEMU-COMMAND...
    local name="$1" elf="$2"; shift 2
    local out status=0
    out="$(mktemp)"
    log "running $name: $* $elf"
    timeout -k 10 "$QEMU_TIMEOUT" "$@" "$elf" </dev/null 2>&1 | tee "$out" || status=$?
    if [ "$status" = 124 ] || [ "$status" = 137 ]; then
        rm -f "$out"; die "$name: QEMU did not finish within ${QEMU_TIMEOUT}s"
    fi
    if [ "$status" != 0 ]; then
        rm -f "$out"; die "$name: firmware exited with status $status"
    fi
    if ! tail -n 1 "$out" | tr -d '\r' | grep -qx 'PASS'; then
        rm -f "$out"; die "$name: exit status 0 but the last line is not PASS"
    fi
    rm -f "$out"
    log "$name: PASS"
}

QEMU_M4=(qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic
         -semihosting-config enable=on,target=native -kernel)
QEMU_A64=(qemu-system-aarch64 -M virt -cpu cortex-a53 -nographic -nic none
          -semihosting-config enable=on,target=native -kernel)

# ---------------------------------------------------------------- self-checks
build cortex-m4f release --bin batchnorm-fw-cortex-m4f
build aarch64 release --bin batchnorm-fw-aarch64
run_qemu cortex-m4f "$here/cortex-m4f/target/thumbv7em-none-eabihf/release/batchnorm-fw-cortex-m4f" "${QEMU_M4[@]}"
run_qemu aarch64 "$here/aarch64/target/aarch64-unknown-none/release/batchnorm-fw-aarch64" "${QEMU_A64[@]}"

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

if [ "$footprint" = 1 ]; then
    for prof in release size; do
        build cortex-m4f "$prof" --bins
        build aarch64 "$prof" --bins
    done
    echo
    echo "Footprint (bytes; flash = vector table + .text + .rodata + .data, static RAM = .data + .bss;"
    echo "'crate' = that binary minus fp_none, which holds only the runtime):"
    printf '| %-22s | %-9s | %-12s | %8s | %7s | %8s | %10s | %11s |\n' \
        target profile firmware .text .rodata flash "static RAM" "crate flash"
    printf '|%s|\n' "------------------------|-----------|--------------|----------|---------|----------|------------|-------------"
    for tgt in cortex-m4f aarch64; do
        if [ "$tgt" = cortex-m4f ]; then
            triple=thumbv7em-none-eabihf; size_tool=arm-none-eabi-size; qemu=("${QEMU_M4[@]}")
        else
            triple=aarch64-unknown-none; size_tool=aarch64-linux-gnu-size; qemu=("${QEMU_A64[@]}")
        fi
        for prof in release size; do
            base=0
            for bin in fp_none fp_eval fp_all; do
                elf="$here/$tgt/target/$triple/$prof/$bin"
                run_status "$tgt $prof $bin" "$elf" "${qemu[@]}"
                read -r t r d b v < <(section_sizes "$size_tool" "$elf")
                flash=$((v + t + r + d))
                [ "$bin" = fp_none ] && base=$flash
                label="$bin"
                case "$bin" in fp_none) label="runtime only";; fp_eval) label="eval only";; fp_all) label="all kernels";; esac
                lvl=3; [ "$prof" = size ] && lvl='"s"'
                printf '| %-22s | %-9s | %-12s | %8d | %7d | %8d | %10d | %11d |\n' \
                    "$triple" "opt $lvl" "$label" "$t" "$r" "$flash" $((d + b)) $((flash - base))
            done
        done
    done

    # NEON: the kernels' hot loops on AArch64 must do their arithmetic on v*.4s.
    echo
    dis="$(mktemp)"
    aarch64-linux-gnu-objdump -d --no-show-raw-insn -C \
        "$here/aarch64/target/aarch64-unknown-none/release/fp_all" >"$dis"
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
    rm -f "$dis"
    echo "AArch64 fp_all (release): FP arithmetic instructions per batchnorm function"
    echo "  f32 v*.4s  f32 scalar  f64 (d or v*.2d)  function"
    echo "$neon_report" | sed 's/^/  /'
    total_vec="$(echo "$neon_report" | awk '{ s += $1 } END { print s + 0 }')"
    [ "$total_vec" -gt 0 ] || die "no NEON (v*.4s) arithmetic in batchnorm's AArch64 code"
    log "NEON: $total_vec vector f32 instructions on v*.4s in batchnorm's code"
fi

log "all embedded checks passed"
