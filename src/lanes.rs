//! The SIMD vector the kernels are written over, and the one place that splits a
//! slice into whole vectors and a tail.
//!
//! `wide` picks the instructions at compile time: AVX/FMA with
//! `-C target-cpu=native` on x86-64, SSE2 pairs by default, NEON on AArch64,
//! arrays of scalars where there is no SIMD (Cortex-M4F).

pub(crate) use wide::f32x8 as V;

/// Lanes in [`V`].
pub(crate) const LANES: usize = 8;

/// The whole vectors of `xs` and the tail (fewer than [`LANES`] values) after them.
#[inline(always)]
pub(crate) fn split(xs: &[f32]) -> (&[[f32; LANES]], &[f32]) {
    xs.as_chunks::<LANES>()
}

/// The whole vectors of `xs` and the tail after them, mutably.
#[inline(always)]
pub(crate) fn split_mut(xs: &mut [f32]) -> (&mut [[f32; LANES]], &mut [f32]) {
    xs.as_chunks_mut::<LANES>()
}

/// A tail of fewer than [`LANES`] values as a vector whose missing lanes hold the
/// matching lanes of `pad`. Kernels pad with the value that is neutral for what they
/// accumulate, so the tail runs through the same arithmetic as whole vectors.
#[inline(always)]
pub(crate) fn load_tail(tail: &[f32], pad: V) -> V {
    let mut lanes = pad.to_array();
    for (lane, &x) in lanes.iter_mut().zip(tail) {
        *lane = x;
    }
    V::new(lanes)
}

/// Writes the first `tail.len()` lanes of `v` to `tail`.
#[inline(always)]
pub(crate) fn store_tail(tail: &mut [f32], v: V) {
    for (out, &x) in tail.iter_mut().zip(v.as_array()) {
        *out = x;
    }
}

/// `TAIL_MASKS[t]`: all bits set in the last `t` lanes, clear in the others.
const TAIL_MASKS: [[f32; LANES]; LANES] = {
    let mut masks = [[0.0; LANES]; LANES];
    let mut t = 0;
    while t < LANES {
        let mut l = LANES - t;
        while l < LANES {
            masks[t][l] = f32::from_bits(u32::MAX);
            l += 1;
        }
        t += 1;
    }
    masks
};

/// For a run `xs` of at least [`LANES`] values whose last `xs.len() % LANES` values do
/// not fill a vector: its last [`LANES`] values as one vector (overlapping the whole
/// vectors before them), with the lanes already covered by those replaced by `pad`.
///
/// One unaligned load: [`load_tail`] writes lanes one by one and then reads them as a
/// vector, which stalls store-to-load forwarding (~15 cycles) on every short run.
/// Only for patterns whose lanes all belong to one channel, since the values land in
/// the last lanes rather than the first.
#[inline(always)]
pub(crate) fn last_vector(xs: &[f32], pad: V) -> V {
    let t = xs.len() % LANES;
    match xs.last_chunk::<LANES>() {
        Some(last) => V::new(TAIL_MASKS[t]).bitselect(V::new(*last), pad),
        None => load_tail(&xs[xs.len() - t..], pad),
    }
}
