//! The SIMD vector the kernels are written over, and the few loads and stores that
//! split a slice into whole vectors and a tail.
//!
//! `wide` picks the instructions at compile time: SSE2 by default and AVX2/FMA with
//! `-C target-cpu=native` on x86-64, NEON on AArch64 (and on 32-bit Arm and
//! WebAssembly where they have 128-bit SIMD). Where there is no SIMD (Cortex-M4F) a
//! "vector" is one f32 (`lanes/one.rs`), not unrolled: element loops with no tails, which
//! keeps flash small.

#[cfg(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64"))]
mod width {
    pub(crate) use wide::f32x8 as V;
    pub(crate) const LANES: usize = 8;
}
// Other targets with 128-bit SIMD (32-bit Arm with NEON, WebAssembly with simd128).
#[cfg(all(
    not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")),
    any(target_feature = "neon", target_feature = "simd128")
))]
mod width {
    pub(crate) use wide::f32x4 as V;
    pub(crate) const LANES: usize = 4;
}
#[cfg(not(any(
    target_arch = "x86",
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_feature = "neon",
    target_feature = "simd128"
)))]
mod width {
    pub(crate) use super::one::F32x1 as V;
    pub(crate) const LANES: usize = 1;
}
#[cfg(not(any(
    target_arch = "x86",
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_feature = "neon",
    target_feature = "simd128"
)))]
mod one;
pub(crate) use width::{LANES, V};

/// Independent accumulators per sum in a contiguous run: enough to hide the add
/// latency (3–4 cycles) at the core's throughput, few enough to stay in registers
/// (SSE2 has 16 of 128 bits: an `f32x8` takes two).
pub(crate) const UNROLL: usize = if cfg!(target_feature = "avx") {
    4
} else if LANES == 8 {
    2
} else {
    1
};

/// Accumulator vectors a run's reduction keeps in registers: `UNROLL` sets of two
/// sums, or of three on AArch64 (32 NEON registers); a kernel with more sums takes
/// fewer sets (three sums × 2 spill SSE2's 16 registers: +22 % instructions).
pub(crate) const ACCUMULATORS: usize = if cfg!(target_arch = "aarch64") {
    3 * UNROLL
} else {
    2 * UNROLL
};

/// `v` as an array of lanes.
pub(crate) type Lanes = [f32; LANES];

/// A tail of fewer than [`LANES`] values as a vector whose missing lanes hold the
/// matching lanes of `pad`. Kernels pad with values that are neutral for what they
/// accumulate, so a tail runs through the same arithmetic as whole vectors.
#[inline(always)]
pub(crate) fn load_tail(tail: &[f32], pad: V) -> V {
    let mut lanes = pad.to_array();
    // Lane by lane up to LANES, not up to the tail's length: a loop the compiler
    // unrolls, where a zip to the tail's length became a call to `memcpy`.
    #[allow(clippy::needless_range_loop)]
    for l in 0..LANES {
        if let Some(&x) = tail.get(l) {
            lanes[l] = x;
        }
    }
    V::new(lanes)
}

/// Writes the first `tail.len()` lanes of `v` to `tail`.
#[inline(always)]
pub(crate) fn store_tail(tail: &mut [f32], v: V) {
    let lanes = v.to_array();
    // As in `load_tail`: unrolled, no `memcpy`.
    #[allow(clippy::needless_range_loop)]
    for l in 0..LANES {
        if let Some(out) = tail.get_mut(l) {
            *out = lanes[l];
        }
    }
}

/// `HEAD_MASKS[t]`: all bits set in the first `t` lanes, clear in the others.
const HEAD_MASKS: [Lanes; LANES] = {
    let mut masks = [[0.0; LANES]; LANES];
    let mut t = 0;
    while t < LANES {
        let mut l = 0;
        while l < t {
            masks[t][l] = f32::from_bits(u32::MAX);
            l += 1;
        }
        t += 1;
    }
    masks
};

/// For the last vector of a run that ends `t` lanes (0 < `t` < [`LANES`]) past its
/// last whole vector, read as the run's last [`LANES`] values (one unaligned load,
/// overlapping the vector before): `v` with its first `LANES − t` lanes, which that
/// vector already holds, replaced by `pad`.
///
/// One load instead of [`load_tail`]'s lane-by-lane writes, which stall
/// store-to-load forwarding (~15 cycles) on every short run.
#[inline(always)]
pub(crate) fn mask_overlap(v: V, t: usize, pad: V) -> V {
    V::new(HEAD_MASKS[LANES - t]).bitselect(pad, v)
}
