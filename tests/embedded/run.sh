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
[ -x /usr/bin/rustc ] && /usr/bin/rustc --version 2>/dev/null | grep -q '^rustc ' || need_pkgs+=(rustc-web)
[ -x /usr/bin/cargo ] || need_pkgs+=(cargo-web)
[ -d /usr/lib/rustlib/src/rust/library/core ] || need_pkgs+=(rust-web-src)
command -v ld.lld-19 >/dev/null || need_pkgs+=(lld-19)
command -v qemu-system-arm >/dev/null && command -v qemu-system-aarch64 >/dev/null || need_pkgs+=(qemu-system-arm)
if [ "$footprint" = 1 ]; then
    command -v arm-none-eabi-size >/dev/null || need_pkgs+=(binutils-arm-none-eabi)
    command -v aarch64-linux-gnu-objdump >/dev/null || need_pkgs+=(binutils-aarch64-linux-gnu)
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
log "$(/usr/bin/rustc --version); $(/usr/bin/cargo --version); $(qemu-system-arm --version | head -1)"

# ---------------------------------------------------------------- build environment
# The firmware crates' .cargo/config.toml hold target, linker, link script and runner
# flags; a RUSTFLAGS from the caller (e.g. CI's "-D warnings") would replace the
# target's rustflags and drop the link script, so clear everything that overrides them.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET \
      CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR RUSTC RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER RUSTUP_TOOLCHAIN
export RUSTC_BOOTSTRAP=1            # unlocks -Zbuild-std on Debian's stable rustc
CARGO=/usr/bin/cargo

build() {  # build DIR [cargo args...]
    local dir="$1"; shift
    log "building $dir $*"
    (cd "$here/$dir" && "$CARGO" build --release --locked -q "$@") || die "build of $dir failed"
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
build cortex-m4f --bin batchnorm-fw-cortex-m4f
build aarch64 --bin batchnorm-fw-aarch64
run_qemu cortex-m4f "$here/cortex-m4f/target/thumbv7em-none-eabihf/release/batchnorm-fw-cortex-m4f" "${QEMU_M4[@]}"
run_qemu aarch64 "$here/aarch64/target/aarch64-unknown-none/release/batchnorm-fw-aarch64" "${QEMU_A64[@]}"

log "all embedded checks passed"
