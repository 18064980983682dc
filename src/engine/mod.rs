//! The one place that knows how a tensor is walked.
//!
//! A kernel is a small definition: a [`Map`] (one output vector from its input
//! vectors and per-channel constants) or a [`Reduce`] (per-channel sums, and maybe an
//! output), written once over the SIMD vector `V`. The engine feeds it every vector of
//! a [`Band`] of channels, whatever the layout, with the constants of each lane's
//! channel, and turns its lanes' sums into per-channel f64 sums. The entry points
//! only compute per-channel constants (in scalar code, once per channel) and pick the
//! kernels.
//!
//! Two walks cover every layout; [`Walk::new`] picks one per call:
//!
//! | layout | walk | one step | lanes |
//! |---|---|---|---|
//! | channels-first, `S > 1` | [`runs`] | one sample: a run of `S` values per channel | all one channel, splat constants |
//! | channels-last, `[N, C]` rows (`S = 1`) | [`lines`], banded | one row's slice of the band's channels | lane `l` is channel `first + l` |
//! | the same with `lcm(C, LANES)` ≤ [`MAX_BAND`] | [`lines`], packed | `P` consecutive values, `P` a multiple of `lcm(C, LANES)` | lane `l` is channel `l % C` |
//!
//! Runs keep their accumulators in registers ([`UNROLL`](crate::lanes::UNROLL) per
//! sum) across a channel's runs; lines keep one accumulator vector per lane slot on
//! the stack and stream the rows in memory order, as the plain loop a compiler
//! vectorizes does. Tails go through the same arithmetic: a run or line that does not
//! end on a whole vector ends with its last `LANES` values as one (overlapping)
//! vector, whose lanes already seen are replaced by the kernel's neutral pad.
//!
//! Sums accumulate in f32 vectors for at most [`BLOCK`] adds per lane, then spill into
//! the caller's f64 sums, so f32 rounding never builds up over a long channel.

use core::ops::Range;

use crate::lanes::{LANES, V};
use crate::shape::{Layout, Shape};

mod lines;
mod runs;

/// Most channels in a band: the size of the per-channel arrays the entry points keep
/// on the stack. 64-bit targets: 256 (a channels-last row of up to 256 channels is
/// read once, in memory order); 32-bit targets (microcontrollers: little stack) 64.
pub(crate) const MAX_BAND: usize = if cfg!(target_pointer_width = "64") {
    256
} else {
    64
};

/// Per-channel values of a band, indexed by the channel's offset in the band.
pub(crate) type PerBand<T> = [T; MAX_BAND];

/// Vector slots of a line: lanes of a band, in vectors.
const MAX_SLOTS: usize = MAX_BAND / LANES;

/// Adds per accumulator lane before its f32 sums spill into f64: a lane's f32 sum
/// carries at most ~64 roundings.
const BLOCK: usize = 64;

/// The least lanes of a packed line: enough independent slots to hide the latency of
/// their load–add–store chains.
const MIN_LINE: usize = 8 * LANES;

/// Bytes of a channels-first band's tensors that a kernel reads twice (its reduction,
/// then its elementwise pass): sized to stay in L2 and a little L3 between the two.
const REUSE_BYTES: usize = 4 << 20;

/// An elementwise kernel: one output vector from `I` input vectors and `K`
/// per-channel constants (as vectors: lane `l` holds the constant of its channel).
pub(crate) trait Map<const I: usize, const K: usize> {
    /// The output at one vector's place.
    fn map(k: &[V; K], x: [V; I]) -> V;
}

/// A reduction kernel: adds `I` input vectors into `A` per-channel sums, with `K`
/// per-channel constants; it may also write one output per element.
pub(crate) trait Reduce<const I: usize, const K: usize, const A: usize> {
    /// Whether [`step`](Self::step)'s result is stored as an output.
    const WRITES: bool = false;
    /// Inputs that add nothing to the sums, for the lanes of a tail vector that hold
    /// no value of this step.
    fn pad(k: &[V; K]) -> [V; I];
    /// Adds one vector's place to `acc`; returns the output there (ignored unless
    /// [`WRITES`](Self::WRITES)).
    fn step(k: &[V; K], x: [V; I], acc: &mut [V; A]) -> V;
}

/// How one call walks its tensor. Built from a shape whose length was checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Walk {
    kind: Kind,
    batch: usize,
    channels: usize,
    spatial: usize,
    len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Runs,
    /// Rows of `channels` values; `period` > 0 when packed into lines of `period`.
    Lines {
        period: usize,
    },
}

/// Channels `first .. first + channels`, walked together.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Band {
    /// The band's first channel.
    pub(crate) first: usize,
    /// How many channels it holds (at most [`MAX_BAND`]).
    pub(crate) channels: usize,
}

impl Walk {
    /// The walk of `shape`, whose element count must already be known to fit.
    pub(crate) fn new(shape: Shape) -> Walk {
        let c = shape.channels;
        let kind = match shape.walk() {
            Layout::ChannelsFirst => Kind::Runs,
            Layout::ChannelsLast => Kind::Lines {
                period: packed_period(c),
            },
        };
        Walk {
            kind,
            batch: shape.batch,
            channels: c,
            spatial: shape.spatial,
            len: shape.batch * c * shape.spatial,
        }
    }

    /// The bands, in channel order, for a kernel that reads `reread` tensors again
    /// after its reduction (train 1, backward 2; 0 for a reduction or a map alone).
    pub(crate) fn bands(&self, reread: usize) -> impl Iterator<Item = Band> {
        let c = self.channels;
        let width = match self.kind {
            Kind::Runs if reread > 0 => {
                // Saturating: with no channels, batch·spatial is not bounded by a slice.
                let bytes = self
                    .batch
                    .saturating_mul(self.spatial)
                    .saturating_mul(4 * reread);
                (REUSE_BYTES / bytes.max(1)).clamp(1, MAX_BAND)
            }
            Kind::Runs => MAX_BAND,
            Kind::Lines { period } if period > 0 => c,
            // Bands of equal width (whole vectors but the last), none narrower than
            // a vector when C is at least one.
            Kind::Lines { .. } => {
                let bands = c.div_ceil(MAX_BAND);
                c.div_ceil(bands.max(1))
                    .next_multiple_of(LANES)
                    .min(MAX_BAND)
            }
        };
        (0..c).step_by(width.max(1)).map(move |first| Band {
            first,
            channels: width.min(c - first),
        })
    }

    /// How many steps walk a band: samples (runs) or lines.
    pub(crate) fn steps(&self) -> usize {
        match self.kind {
            // No values: nothing to walk, however large the batch.
            _ if self.len == 0 => 0,
            Kind::Runs => self.batch,
            Kind::Lines { period: 0 } => self.batch * self.spatial,
            Kind::Lines { period } => self.len.div_ceil(period),
        }
    }

    /// The steps of a band's first block: the first sample, or the first [`BLOCK`]
    /// lines.
    pub(crate) fn first_block(&self) -> Range<usize> {
        let first = match self.kind {
            Kind::Runs => 1,
            Kind::Lines { .. } => BLOCK,
        };
        0..self.steps().min(first)
    }

    /// Values per channel in `steps`.
    pub(crate) fn count(&self, steps: Range<usize>) -> usize {
        match self.kind {
            Kind::Runs => steps.len() * self.spatial,
            Kind::Lines { period: 0 } => steps.len(),
            Kind::Lines { period } => {
                let end = (steps.end * period).min(self.len);
                (end - (steps.start * period).min(end)) / self.channels
            }
        }
    }

    /// Where the first value of channel `c` is, if the tensor has values.
    pub(crate) fn first_index(&self, c: usize) -> Option<usize> {
        match self.kind {
            _ if self.len == 0 => None,
            Kind::Runs => Some(c * self.spatial),
            Kind::Lines { .. } => Some(c),
        }
    }
}

/// The line length of the packed channels-last walk for `c` channels: the smallest
/// multiple of `lcm(c, LANES)` of at least [`MIN_LINE`] lanes, or 0 when that does not
/// fit in [`MAX_BAND`] lanes.
fn packed_period(c: usize) -> usize {
    if c == 0 {
        return 0;
    }
    let lcm = c / gcd(c, LANES) * LANES;
    let period = lcm * MIN_LINE.div_ceil(lcm);
    if period <= MAX_BAND {
        period
    } else if lcm <= MAX_BAND {
        lcm
    } else {
        0
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Adds the `A` sums of `R` over `steps` of `band` to `sums` (per channel of the
/// band), reading `ins` with the constants `k` of each channel; stores `R`'s output
/// into `out` where it [writes](Reduce::WRITES) (else `out` is unused).
#[allow(clippy::too_many_arguments)]
pub(crate) fn reduce<R: Reduce<I, K, A>, const I: usize, const K: usize, const A: usize>(
    _: R,
    walk: &Walk,
    band: Band,
    ins: [&[f32]; I],
    out: &mut [f32],
    k: &PerBand<[f32; K]>,
    steps: Range<usize>,
    sums: &mut PerBand<[f64; A]>,
) {
    match walk.kind {
        Kind::Runs => runs::reduce::<R, I, K, A>(walk, band, ins, out, k, steps, sums),
        Kind::Lines { period } => {
            lines::reduce::<R, I, K, A>(&walk.lines(band, period), ins, out, k, steps, sums)
        }
    }
}

/// `out = M(ins)` over `band`, with the constants `k` of each channel. An empty
/// `ins[0]` means the first input is `out` itself (in place).
pub(crate) fn map<M: Map<I, K>, const I: usize, const K: usize>(
    _: M,
    walk: &Walk,
    band: Band,
    ins: [&[f32]; I],
    out: &mut [f32],
    k: &PerBand<[f32; K]>,
) {
    if walk.len == 0 {
        return;
    }
    let in_place = ins[0].is_empty();
    match (walk.kind, in_place) {
        (Kind::Runs, false) => runs::map::<M, I, K, false>(walk, band, ins, out, k),
        (Kind::Runs, true) => runs::map::<M, I, K, true>(walk, band, ins, out, k),
        (Kind::Lines { period }, false) => {
            lines::map::<M, I, K, false>(&walk.lines(band, period), ins, out, k)
        }
        (Kind::Lines { period }, true) => {
            lines::map::<M, I, K, true>(&walk.lines(band, period), ins, out, k)
        }
    }
}

/// `ins` restricted to `at`, where an empty input (the in-place placeholder) stays
/// empty.
#[inline(always)]
fn sub<'a, const I: usize>(ins: &[&'a [f32]; I], at: Range<usize>) -> [&'a [f32]; I] {
    core::array::from_fn(|j| {
        let x = ins[j];
        if x.is_empty() {
            x
        } else {
            &x[at.clone()]
        }
    })
}
