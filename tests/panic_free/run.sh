#!/usr/bin/env bash
# Proves at link time that no public entry point of batchnorm can panic, on x86-64
# (x86_64-unknown-linux-gnu), Cortex-M4F (thumbv7em-none-eabihf) and AArch64
# (aarch64-unknown-none), each at opt-level 3 and "s" (fat LTO, one codegen unit).
#
#   bash tests/panic_free/run.sh            every target and level
#   bash tests/panic_free/run.sh x86_64     only the targets whose triple contains x86_64
#
# How: src/entry_points.rs wraps every entry point in a `#[no_mangle]` function of a
# `#![no_std]` staticlib whose panic handler calls a symbol defined nowhere. Each
# wrapper is then linked on its own (ld.lld -e WRAPPER --gc-sections): the linker keeps
# only what the wrapper can reach, and reports that symbol as undefined exactly when a
# panic is still reachable after optimisation. A control wrapper that does panic must
# be reported, or the check itself is broken. The failure names the wrapper, and with
# llvm-objdump and llvm-symbolizer (Debian package llvm) also the panic sites.
#
# Toolchains: rustup's stable for x86-64; for the two embedded targets Debian's
# rustc-web/rust-web-src with -Zbuild-std=core and ld.lld-19, installed with apt-get
# when missing, as tests/embedded/run.sh does (see ../shared/EMBEDDED.md).
# The last line is "panic-free: N entry points, M targets × profiles".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
only="${1:-}"
log() { printf '[panic-free] %s\n' "$*"; }
die() { printf '[panic-free] ERROR: %s\n' "$*" >&2; exit 1; }
source "$here/../apt.sh"

TARGETS=(x86_64-unknown-linux-gnu thumbv7em-none-eabihf aarch64-unknown-none)
PROFILES=(o3 os)
SYMBOL=batchnorm_panic_free_panic_is_reachable
CONTROL=pf_control_must_panic
selected=()
for t in "${TARGETS[@]}"; do [[ "$t" == *"$only"* ]] && selected+=("$t"); done
[ "${#selected[@]}" -gt 0 ] || die "no target matches '$only' (targets: ${TARGETS[*]})"

# ---------------------------------------------------------------- toolchains
embedded=0
for t in "${selected[@]}"; do [ "$t" = x86_64-unknown-linux-gnu ] || embedded=1; done
need_pkgs=()
if command -v dpkg-query >/dev/null; then
    want=(lld-19)
    [ "$embedded" = 1 ] && want+=(rustc-web cargo-web rust-web-src)
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
    done
fi
apt_install ${need_pkgs[@]+"${need_pkgs[@]}"}
command -v ld.lld-19 >/dev/null || die "ld.lld-19 not found (Debian package lld-19)"
if [ "$embedded" = 1 ]; then
    [ -d /usr/lib/rustlib/src/rust/library/core ] || die "rust-web-src missing: /usr/lib/rustlib/src/rust/library/core"
    log "embedded: $(/usr/bin/rustc --version) with -Zbuild-std=core"
fi
log "x86-64: $(cargo +stable --version) ($(rustc +stable --version))"

# Flags from the caller (CI's -D warnings, a target-cpu) would change what is proven
# and, for build-std, rebuild core with them: the proof is of the default build.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET \
      CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR RUSTC RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER RUSTUP_TOOLCHAIN

build() {  # build TARGET PROFILE -> path of the staticlib
    local target="$1" profile="$2"
    (
        cd "$here"
        if [ "$target" = x86_64-unknown-linux-gnu ]; then
            cargo +stable build --locked -q --profile "$profile" --target "$target"
        else
            RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo build --locked -q \
                --profile "$profile" --target "$target" -Z build-std=core
        fi
    ) >&2 || die "build for $target ($profile) failed"
    echo "$here/target/$target/$profile/libbatchnorm_panic_free.a"
}

# The wrappers: every `fn pf_…` of the entry point list.
mapfile -t entries < <(grep -oE '^\s*fn pf_[a-z0-9_]+' "$here/src/entry_points.rs" | sed 's/^ *fn //')
[ "${#entries[@]}" -gt 0 ] || die "no entry points in src/entry_points.rs"
dups="$(printf '%s\n' "${entries[@]}" | sort | uniq -d)"
[ -z "$dups" ] || die "entry points listed twice: $dups"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# reaches LIB WRAPPER: exit 0 when a panic is reachable from WRAPPER.
reaches() {
    local out="$work/link.txt"
    # Undefined symbols are only reported from sections the wrapper keeps alive;
    # memcpy and friends are undefined too here, so they are warnings, not errors.
    ld.lld-19 -e "$2" --gc-sections --warn-unresolved-symbols -o "$work/linked.elf" "$1" \
        >"$out" 2>&1 || { cat "$out" >&2; die "linking $2 failed"; }
    if grep -q 'cannot find entry symbol' "$out"; then
        die "$2 is listed in src/entry_points.rs but not in the build"
    fi
    grep -q "undefined symbol: $SYMBOL\$" "$out"
}

# sites ELF: the panicking calls left in a linked wrapper, with the crate's source line
# that led to each (the first inlined frame outside core and outside this crate).
sites() {
    command -v llvm-objdump >/dev/null && command -v llvm-symbolizer >/dev/null || {
        echo "    (install Debian's llvm for the panic sites)"; return 0; }
    llvm-objdump -d -C --no-show-raw-insn "$1" | awk '
        /^[0-9a-f]+ <.*>:$/ { fn = $0; sub(/^[0-9a-f]+ </, "", fn); sub(/>:$/, "", fn); next }
        fn ~ /core::panicking|_fail$|unwrap_failed|rust_begin_unwind/ { next }
        /<[^>]*(core::panicking::|_fail>|unwrap_failed|expect_failed)/ {
            callee = $0; sub(/^[^<]*</, "", callee); sub(/(\+0x[0-9a-f]+)?>.*$/, "", callee)
            addr = $1; sub(/:$/, "", addr); print "0x" addr, callee
        }' | while read -r addr callee; do
        where="$(llvm-symbolizer --obj="$1" --inlining "$addr" | awk '
            NR % 2 == 1 { f = $0; next }
            $0 !~ /^\/rustc\/|\/library\/core\/|tests\/panic_free\/src|\.cargo\/registry/ {
                sub(/:[0-9]+$/, ""); print $0 " (" f ")"; exit }')"
        echo "    ${callee#core::} from ${where:-core}"
    done | sort | uniq -c | sort -rn | head -n 30
}

failed=0 combos=0
for target in "${selected[@]}"; do
    for profile in "${PROFILES[@]}"; do
        label="$target, opt $([ "$profile" = o3 ] && echo 3 || echo '"s"')"
        log "building $label"
        lib="$(build "$target" "$profile")"
        reaches "$lib" "$CONTROL" \
            || die "$label: the control $CONTROL links without a panic path: the check is broken"
        bad=()
        for e in "${entries[@]}"; do
            if reaches "$lib" "$e"; then
                bad+=("$e")
                echo "[panic-free] $label: a panic is reachable from $e" >&2
                sites "$work/linked.elf" >&2
            fi
        done
        combos=$((combos + 1))
        if [ "${#bad[@]}" -gt 0 ]; then
            failed=$((failed + ${#bad[@]}))
            log "$label: ${#bad[@]} of ${#entries[@]} entry points can panic: ${bad[*]}"
        else
            log "$label: ${#entries[@]} entry points, no panic path"
        fi
    done
done
[ "$failed" = 0 ] || die "$failed (entry point, target, level) combinations can panic (see above)"
echo "panic-free: ${#entries[@]} entry points, $combos targets × profiles"
