//! The one place that knows how a tensor is walked.
//!
//! A kernel is a small definition (see `kernels.rs`): a [`Map`] (one output vector from
//! its input vectors and per-channel constants), a [`Reduce`] (per-channel sums, and
//! maybe one output) or a [`MapSum`] (a map of [rows](Walk::rows) that also adds into
//! sums per position, which every row shares: a row norm's dγ and dβ), written once
//! over the SIMD vector `V`, with any number of input streams. The engine feeds it every vector of a [`Band`] of channels, whatever the
//! layout, with the constants of each lane's channel, and turns its lanes' sums into
//! per-channel f64 sums. The entry points only compute per-channel constants, once per
//! channel, pass them as one slice per constant, and pick the kernel.
//!
//! Three walks cover every layout; [`Walk::new`] picks one per call, and nothing
//! below it branches on the layout per element:
//!
//! | tensor | walk | one step | lanes |
//! |---|---|---|---|
//! | channels-first, `S > 1` | `runs` | one sample: a run of `S` values per channel | all one channel: splat constants |
//! | channels-last, `[N, C]` rows (`S = 1`) | `lines`, rows | one row's slice of the band's channels | lane `l` is channel `first + l` |
//! | either, when `lcm(C·S, LANES)` lanes fit a band (`S` = 1 channels-last) | `lines`, packed | thousands of consecutive values, in periods of `P`, a multiple of `lcm(C·S, LANES)` | lane `p` of a period is channel `p / S % C` |
//!
//! Runs keep their accumulators in registers ([`UNROLL`](crate::lanes::UNROLL) per
//! sum) across a channel's runs; lines keep one accumulator vector per lane slot on
//! the stack and stream the rows in memory order, as the plain loop a compiler
//! vectorizes does. Tails go through the same arithmetic: a run or a rows line that
//! does not end on a whole vector ends with its last `LANES` values as one
//! (overlapping) vector, whose lanes already seen are replaced by the kernel's neutral
//! pad; the one short line of a packed walk ends on a padded vector.
//!
//! Where there is no SIMD (one lane: Cortex-M4F) lanes have nothing to fill and
//! memory is read at one speed in any order: every layout is walked as runs, a
//! channels-last channel as one run of its `N·S` values, `C` apart. Only the runs'
//! element loops are then in the build, one per kernel, without tails.
//!
//! Sums accumulate in f32 vectors for at most [`BLOCK`] adds per lane, then spill into
//! the caller's f64 sums, so f32 rounding never builds up over a long channel.
//!
//! Per-call setup is sized to the tensor: bands hold at most [`SMALL`] channels (64)
//! unless channels-last has more ([`MID`], 256, then [`MAX_BAND`], 1024), so a tiny
//! tensor does not pay for 1024-channel arrays.

use core::ops::Range;

use crate::lanes::{LANES, V};
use crate::shape::{Layout, Shape};

mod lines;
mod runs;

/// Most channels in a band. 64-bit targets: 1024, so that a channels-last row of up
/// to 1024 channels is read once, in memory order (a band's slice of longer rows, read
/// row after row, streams several times slower); 32-bit targets (microcontrollers:
/// little stack) 16, and 8 with one lane, where a band is only a stretch of channels
/// whose constants are set up together (every channel is a run of its own).
pub(crate) const MAX_BAND: usize = if cfg!(target_pointer_width = "64") {
    1024
} else if LANES == 1 {
    8
} else {
    16
};

/// The band capacities a walk picks from, [`SMALL`] ≤ [`MID`] ≤ [`MAX_BAND`]: the
/// per-channel arrays of a band, and a line's per-lane ones, are set up on every call,
/// so a call sizes them to its channels (one size on 32-bit targets). [`by_cap`]
/// gives a kernel the capacity of its walk as a constant.
pub(crate) const SMALL: usize = if MAX_BAND > 64 { 64 } else { MAX_BAND };
pub(crate) const MID: usize = if MAX_BAND > 256 { 256 } else { MAX_BAND };

/// `$body` with the constant `$B` set to the band capacity of the walk `$walk`
/// ([`SMALL`], [`MID`] or [`MAX_BAND`]), for per-channel arrays of that length. The
/// functions it calls are not inlined, so that a call's stack holds the arrays of its
/// capacity only (inlined, a frame held all three: 64 KiB on AArch64 for any call);
/// 32-bit targets have one capacity and inline them.
macro_rules! by_cap {
    ($walk:expr, $B:ident => $body:expr) => {{
        use $crate::engine::{MAX_BAND, MID, SMALL};
        let cap = $walk.cap();
        // One capacity (32-bit targets): one call in the build.
        if SMALL == MAX_BAND || cap <= SMALL {
            const $B: usize = SMALL;
            $body
        } else if cap <= MID {
            const $B: usize = MID;
            $body
        } else {
            const $B: usize = MAX_BAND;
            $body
        }
    }};
}
pub(crate) use by_cap;

/// Adds per accumulator lane before its f32 sums spill into f64: a lane's f32 sum
/// carries at most ~64 roundings.
pub(crate) const BLOCK: usize = 64;

/// The least lanes of a packed period: enough independent slots to hide the latency
/// of their load–add–store chains.
const MIN_LINE: usize = 8 * LANES;

/// Values in a packed line: enough that its setup is spread thin.
const PACKED_LINE: usize = 4096;

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

/// An elementwise kernel that also adds into `A` sums per position of a row, which
/// every row shares (a row norm's dγ and dβ): one output vector and the additions to
/// the sums' vectors at its place.
pub(crate) trait MapSum<const I: usize, const K: usize, const A: usize> {
    /// Inputs that add nothing to the sums, for the lanes of a run's last vector
    /// that the one before it already added.
    fn pad(k: &[V; K]) -> [V; I];
    /// The output at one vector's place; adds to `acc`, the sums at that place.
    fn map(k: &[V; K], x: [V; I], acc: &mut [V; A]) -> V;
}

/// How one call walks its tensor. Built from a shape whose length was checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Walk {
    kind: Kind,
    /// Most channels in a band: [`SMALL`], [`MID`] or [`MAX_BAND`].
    cap: usize,
    batch: usize,
    channels: usize,
    spatial: usize,
    len: usize,
    /// Runs: the distance between a run's values, 1 (contiguous) or, with one lane
    /// channels-last, `C`.
    step: usize,
    /// How many of a kernel's last inputs are shared by every run: one run's worth of
    /// values, read at the same positions in every run (a row's γ and β).
    shared: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Runs,
    /// Lines of a band's slice of each row of `channels` values.
    Rows,
    /// The flat tensor in lines of `line` values, a whole number of periods of the
    /// lane pattern, `period` a multiple of `lcm(C·S, LANES)` (`S` = `spatial`: 1 for
    /// channels-last): lane `p` holds channel `p / S % C`.
    Packed {
        period: usize,
        spatial: usize,
        line: usize,
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

impl Band {
    /// The band's part of the per-channel slice `xs` (empty if `xs` is too short).
    pub(crate) fn of<T>(self, xs: &[T]) -> &[T] {
        xs.get(self.first..self.first + self.channels)
            .unwrap_or(&[])
    }
}

impl Walk {
    /// The walk of `shape`, whose element count must already be known to fit.
    pub(crate) fn new(shape: Shape) -> Walk {
        let c = shape.channels;
        let first = shape.walk() == Layout::ChannelsFirst;
        let cap = if first || c <= SMALL {
            SMALL
        } else if c <= MID {
            MID
        } else {
            MAX_BAND
        };
        // Channels-first samples small enough to pack go the packed way too when they
        // hold more runs than the lane pattern has lanes (many short runs of few
        // channels): setting up the pattern then costs less than a run each.
        // Rows of more than MID channels are long enough as they are: packed, their
        // lines would be a few rows each, and a first block (see `band_moments`) one
        // line.
        let spatial = if first { shape.spatial } else { 1 };
        let period = c
            .checked_mul(spatial)
            .map_or(0, |values| packed_period(values, cap.min(MID)));
        let runs = shape.batch.saturating_mul(c);
        let period = if first && runs <= period { 0 } else { period };
        let kind = match (first, period) {
            (_, 1..) => Kind::Packed {
                period,
                spatial,
                // At most BLOCK periods: a line adds at most that much to a lane.
                line: period * (PACKED_LINE / period).clamp(1, BLOCK),
            },
            (true, 0) => Kind::Runs,
            (false, 0) => Kind::Rows,
        };
        // Checked by the caller (`Shape::len`), in that order of products.
        let len = shape.len().unwrap_or(0);
        let walk = Walk {
            kind,
            cap,
            batch: shape.batch,
            channels: c,
            spatial: shape.spatial,
            len,
            step: 1,
            shared: 0,
        };
        // One lane (no SIMD): every layout as runs, a channels-last channel's values
        // (every C-th) as one run over the tensor; no lines to set up, and one
        // element loop per kernel in flash, not two.
        match (LANES, first) {
            (2.., _) => walk,
            (_, true) => Walk {
                kind: Kind::Runs,
                ..walk
            },
            (_, false) => Walk {
                kind: Kind::Runs,
                batch: 1,
                spatial: len / c.max(1),
                step: c,
                ..walk
            },
        }
    }

    /// `rows` contiguous rows of `len` values, each walked as one run with its own
    /// constants (the rows of layer and RMS norm); see [`sharing`](Self::sharing).
    /// `rows·len` must already be known to fit.
    pub(crate) fn rows(rows: usize, len: usize) -> Walk {
        Walk {
            kind: Kind::Runs,
            cap: SMALL,
            batch: 1,
            channels: rows,
            spatial: len,
            len: rows.saturating_mul(len),
            step: 1,
            shared: 0,
        }
    }

    /// This walk of [rows](Self::rows) for a kernel whose last `shared` inputs hold
    /// one row's worth of values, which every row reads at the same positions (γ and
    /// β of a row norm).
    pub(crate) fn sharing(self, shared: usize) -> Walk {
        Walk { shared, ..self }
    }

    /// Whether channels-first runs are walked one by one (not packed): a band's
    /// channels then lie in one stretch of each sample.
    pub(crate) fn runs(&self) -> bool {
        self.kind == Kind::Runs
    }

    /// Most channels in a band: the length of the per-channel arrays that the
    /// callers of [`reduce`] and [`map`] pass (see [`by_cap`]).
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// The bands, in channel order, for a kernel that reads `reread` tensors again
    /// after its reduction (train 1, backward 2; 0 for a reduction or a map alone).
    pub(crate) fn bands(&self, reread: usize) -> impl Iterator<Item = Band> {
        self.bands_within(reread, REUSE_BYTES)
    }

    /// [`bands`](Self::bands) whose reread tensors hold at most `bytes` (when a
    /// channel's do), for a kernel that rereads them from a nearer cache.
    pub(crate) fn bands_within(&self, reread: usize, bytes: usize) -> impl Iterator<Item = Band> {
        let c = self.channels;
        let width = match self.kind {
            Kind::Runs if reread > 0 => {
                // Saturating: with no channels, batch·spatial is not bounded by a slice.
                let per_channel = self
                    .batch
                    .saturating_mul(self.spatial)
                    .saturating_mul(4 * reread);
                // `cap` ≥ 1: as `clamp(1, cap)`, without its panic path for `cap < 1`.
                (bytes / per_channel.max(1)).min(self.cap).max(1)
            }
            Kind::Runs => self.cap,
            Kind::Packed { .. } => c,
            // Bands of equal width (whole vectors but the last), none narrower than
            // a vector when C is at least one.
            Kind::Rows => {
                let bands = c.div_ceil(self.cap.max(1));
                c.div_ceil(bands.max(1))
                    .next_multiple_of(LANES)
                    .min(self.cap)
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
            Kind::Rows => self.batch * self.spatial,
            // A line is never empty; `max` shows the compiler so (no panic path).
            Kind::Packed { line, .. } => self.len.div_ceil(line.max(1)),
        }
    }

    /// The steps of a band's first block: the first sample, the first [`BLOCK`] rows,
    /// or the first packed line.
    pub(crate) fn first_block(&self) -> Range<usize> {
        let first = match self.kind {
            Kind::Runs | Kind::Packed { .. } => 1,
            Kind::Rows => BLOCK,
        };
        0..self.steps().min(first)
    }

    /// Values per channel in `steps`.
    pub(crate) fn count(&self, steps: Range<usize>) -> usize {
        match self.kind {
            Kind::Runs => steps.len() * self.spatial,
            Kind::Rows => steps.len(),
            Kind::Packed { line, .. } => {
                let end = (steps.end * line).min(self.len);
                (end - (steps.start * line).min(end)) / self.channels.max(1)
            }
        }
    }

    /// The values of the run of channel `c` in sample `n`: `spatial` of them, `step`
    /// apart (the whole range where there is SIMD: `step` is 1).
    #[inline(always)]
    pub(crate) fn run_of(&self, n: usize, c: usize) -> Range<usize> {
        let s = self.spatial;
        let (at, span) = match (s, self.step) {
            (_, step) if LANES > 1 || step == 1 => ((n * self.channels + c) * s, s),
            (0, _) => (c, 0),
            // A strided run is a channel's only one (n = 0).
            (s, step) => (c, (s - 1) * step + 1),
        };
        at..at + span
    }

    /// Where the first value of channel `c` is, if the tensor has values.
    pub(crate) fn first_index(&self, c: usize) -> Option<usize> {
        match self.kind {
            _ if self.len == 0 => None,
            Kind::Runs => Some(self.run_of(0, c).start),
            Kind::Packed { spatial, .. } => Some(c * spatial),
            Kind::Rows => Some(c),
        }
    }
}

/// The line length of the packed walk for samples of `c` values: the smallest
/// multiple of `lcm(c, LANES)` of at least [`MIN_LINE`] lanes, or 0 when that does not
/// fit in `cap` lanes.
fn packed_period(c: usize, cap: usize) -> usize {
    if c == 0 || c > cap {
        return 0;
    }
    // Neither divisor is 0 (c ≥ 1); `max` shows the compiler so (no panic path).
    let lcm = c / gcd(c, LANES).max(1) * LANES;
    let period = lcm * MIN_LINE.div_ceil(lcm.max(1));
    if period <= cap {
        period
    } else if lcm <= cap {
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
/// into `out` where it [writes](Reduce::WRITES) (else `out` is unused). `k[q][i]` is
/// constant `q` of the band's channel `i`; `sums[i]` its sums.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reduce<R: Reduce<I, K, A>, const I: usize, const K: usize, const A: usize>(
    _: R,
    walk: &Walk,
    band: Band,
    ins: [&[f32]; I],
    out: &mut [f32],
    k: [&[f32]; K],
    steps: Range<usize>,
    sums: &mut [[f64; A]],
) {
    // One lane walks only runs (`Walk::new`): `LANES == 1` leaves no lines in the build.
    if LANES == 1 || walk.kind == Kind::Runs {
        return runs::reduce::<R, I, K, A>(walk, band, ins, out, k, steps, sums);
    }
    let g = walk.lines(band);
    // A line's vector slots: lanes of a band, in vectors.
    by_cap!(walk, B => lines::reduce::<R, I, K, A, { B / LANES }>(&g, ins, out, k, steps, sums))
}

/// `out = M(ins)` over `band`, with the constants `k` of each channel (as in
/// [`reduce`]). An empty `ins[0]` means the first input is `out` itself (in place).
pub(crate) fn map<M: Map<I, K>, const I: usize, const K: usize>(
    _: M,
    walk: &Walk,
    band: Band,
    ins: [&[f32]; I],
    out: &mut [f32],
    k: [&[f32]; K],
) {
    if walk.len == 0 {
        return;
    }
    let in_place = ins[0].is_empty();
    if LANES == 1 || walk.kind == Kind::Runs {
        return match in_place {
            false => runs::map::<M, I, K, false>(walk, band, ins, out, k),
            true => runs::map::<M, I, K, true>(walk, band, ins, out, k),
        };
    }
    let g = walk.lines(band);
    by_cap!(walk, B => match in_place {
        false => lines::map::<M, I, K, false, { B / LANES }>(&g, ins, out, k),
        true => lines::map::<M, I, K, true, { B / LANES }>(&g, ins, out, k),
    })
}

/// `out = M(ins)` over the positions `cols` of every row of `band` (a [rows](Walk::rows)
/// walk), as [`map`] does, adding each place's sums to `sums[a][p − cols.start]`
/// for position `p`. The shared inputs are read at the same positions.
#[allow(clippy::too_many_arguments)]
pub(crate) fn map_sum<M: MapSum<I, K, A>, const I: usize, const K: usize, const A: usize>(
    _: M,
    walk: &Walk,
    band: Band,
    ins: [&[f32]; I],
    out: &mut [f32],
    k: [&[f32]; K],
    cols: Range<usize>,
    sums: [&mut [f32]; A],
) {
    if walk.len > 0 && walk.kind == Kind::Runs {
        runs::map_sum::<M, I, K, A>(walk, band, ins, out, k, cols, sums);
    }
}

/// `ins` restricted to `at`, where an empty input (the in-place placeholder) stays
/// empty.
#[inline(always)]
fn sub<'a, const I: usize>(ins: &[&'a [f32]; I], at: Range<usize>) -> [&'a [f32]; I] {
    // `at` is in range of every non-empty input of a checked call; `get` keeps the
    // panic path of an unprovable cut out of the build (tests/panic_free/).
    each(|j| ins[j].get(at.clone()).unwrap_or(&[]))
}

/// `xs[c]`, or 0 out of range (where a checked call never reads): per-channel reads
/// through this keep a panic path out of the build.
#[inline(always)]
pub(crate) fn at(xs: &[f32], c: usize) -> f32 {
    xs.get(c).copied().unwrap_or(0.0)
}

/// `out[c] = v`, nothing out of range (where a checked call never writes).
#[inline(always)]
pub(crate) fn put(out: &mut [f32], c: usize, v: f32) {
    if let Some(o) = out.get_mut(c) {
        *o = v;
    }
}

/// `xs` but the first `skip` cut to their first `n` values, or `None` if one is
/// shorter (which a checked call never has): past a `let … else { return }` each holds
/// exactly `n`, and no unprovable cut leaves a panic path. Loops over several of them
/// go through [`zip_with`]: the compiler sees the length of one, not that all share it.
#[inline(always)]
pub(crate) fn cut<T, const N: usize>(xs: [&[T]; N], n: usize, skip: usize) -> Option<[&[T]; N]> {
    let mut out = xs;
    #[allow(clippy::needless_range_loop)]
    for j in skip..N {
        out[j] = xs[j].get(..n)?;
    }
    Some(out)
}

/// Calls `f(o, [xs[0][v], xs[1][v], …])` for the `v`-th item `o` of `outs`, over the
/// shortest of them: streams zipped, not indexed, so that no load is checked (the
/// compiler does not see that several cut slices have one length). The first `skip`
/// streams are not read (in place, stream 0 is `o` itself): they give `fill`. More
/// than three read streams fall back to checked loads.
#[inline(always)]
pub(crate) fn zip_with<O, T: Copy, const I: usize>(
    outs: impl Iterator<Item = O>,
    xs: [&[T]; I],
    skip: usize,
    fill: T,
    mut f: impl FnMut(O, [T; I]),
) {
    let read = |j: usize| xs.get(skip + j).copied().unwrap_or(&[]);
    let (a, b, c) = (read(0), read(1), read(2));
    let place = |v: [T; 3]| -> [T; I] {
        core::array::from_fn(|j| match j.checked_sub(skip) {
            Some(j) => v.get(j).copied().unwrap_or(fill),
            None => fill,
        })
    };
    let d = fill;
    match I.saturating_sub(skip) {
        0 => outs.for_each(|o| f(o, [d; I])),
        1 => outs.zip(a).for_each(|(o, &a)| f(o, place([a, d, d]))),
        2 => outs
            .zip(a.iter().zip(b))
            .for_each(|(o, (&a, &b))| f(o, place([a, b, d]))),
        3 => outs
            .zip(a.iter().zip(b).zip(c))
            .for_each(|(o, ((&a, &b), &c))| f(o, place([a, b, c]))),
        _ => outs.enumerate().for_each(|(v, o)| {
            let at = |j: usize| xs.get(j).and_then(|x| x.get(v)).copied().unwrap_or(d);
            f(
                o,
                core::array::from_fn(|j| if j < skip { d } else { at(j) }),
            )
        }),
    }
}

/// [`zip_with`] over every `step`-th value of each stream (the one-lane walk's
/// strided runs): `f(o, [xs[0][v·step], …])`.
#[inline(always)]
pub(crate) fn zip_step<O, T: Copy + Default, const I: usize>(
    outs: impl Iterator<Item = O>,
    xs: [&[T]; I],
    skip: usize,
    step: usize,
    mut f: impl FnMut(O, [T; I]),
) {
    let step = step.max(1);
    let read = |j: usize| {
        xs.get(skip + j)
            .copied()
            .unwrap_or(&[])
            .iter()
            .step_by(step)
    };
    let (a, b, c) = (read(0), read(1), read(2));
    let d = T::default();
    let place = |v: [T; 3]| -> [T; I] {
        core::array::from_fn(|j| match j.checked_sub(skip) {
            Some(j) => v.get(j).copied().unwrap_or(d),
            None => d,
        })
    };
    match I.saturating_sub(skip) {
        0 => outs.for_each(|o| f(o, [d; I])),
        1 => outs.zip(a).for_each(|(o, &a)| f(o, place([a, d, d]))),
        2 => outs
            .zip(a.zip(b))
            .for_each(|(o, (&a, &b))| f(o, place([a, b, d]))),
        3 => outs
            .zip(a.zip(b).zip(c))
            .for_each(|(o, ((&a, &b), &c))| f(o, place([a, b, c]))),
        _ => outs.enumerate().for_each(|(v, o)| {
            let at = |j: usize| {
                xs.get(j)
                    .and_then(|x| x.get(v * step))
                    .copied()
                    .unwrap_or(d)
            };
            f(
                o,
                core::array::from_fn(|j| if j < skip { d } else { at(j) }),
            )
        }),
    }
}

/// The length of the shortest of `xs` but the first `skip`, at most `n`.
#[inline(always)]
pub(crate) fn shortest<T, const N: usize>(xs: &[&[T]; N], n: usize, skip: usize) -> usize {
    let mut n = n;
    #[allow(clippy::needless_range_loop)]
    for j in skip..N {
        n = n.min(xs[j].len());
    }
    n
}

/// `[f(0), f(1), …]`, as `core::array::from_fn`, but simple enough to be inlined
/// with `f` at opt-level "s" too: there, `from_fn`'s layers stay calls, and an
/// `array[j]` inside `f` keeps a bounds check (a panic path) that inlined is seen to
/// be in range.
#[inline(always)]
pub(crate) fn each<T: Copy + Default, const N: usize>(mut f: impl FnMut(usize) -> T) -> [T; N] {
    let mut out = [T::default(); N];
    // A plain range: `j < N` is the loop's condition, which the compiler then knows
    // inside `f` (an enumerated iterator's counter carries no such bound).
    #[allow(clippy::needless_range_loop)]
    for j in 0..N {
        out[j] = f(j);
    }
    out
}

impl Walk {
    /// `ins` restricted to the run `at`: the [shared](Walk::rows) ones to the run's
    /// positions, the others as [`sub`] does.
    #[inline(always)]
    fn run<'a, const I: usize>(&self, ins: &[&'a [f32]; I], at: Range<usize>) -> [&'a [f32]; I] {
        let positions = 0..at.len();
        self.run_at(ins, at, positions)
    }

    /// [`run`](Self::run) for the part `at` of a run at its positions `cols`.
    #[inline(always)]
    fn run_at<'a, const I: usize>(
        &self,
        ins: &[&'a [f32]; I],
        at: Range<usize>,
        cols: Range<usize>,
    ) -> [&'a [f32]; I] {
        if self.shared == 0 {
            return sub(ins, at);
        }
        let from = I.saturating_sub(self.shared);
        each(|j| {
            let x = ins[j];
            let at = if j >= from { cols.clone() } else { at.clone() };
            x.get(at).unwrap_or(&[])
        })
    }
}
