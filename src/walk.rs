//! How the kernels walk a tensor.
//!
//! Channels are taken in *groups*. A group's values form a sequence of contiguous
//! *segments*; each segment is cut into *chunks* of the group's lane pattern, and lane
//! `p` of a chunk always holds a value of channel `first + p % channels`. So every
//! per-channel constant becomes a fixed pattern of at most [`MAX_VECS`] vectors, and
//! the inner loops are plain vector arithmetic whatever the layout:
//!
//! | plan | group | segments | pattern |
//! |---|---|---|---|
//! | channels-first, `S > 1` | one channel | its `N` runs of `S` values | 32 lanes, all that channel |
//! | channels-last, `lcm(C, 8) ≤ 64` | all channels | the flat tensor in pieces of `P` | `P` = multiple of `lcm(C, 8)` in 32..=64 |
//! | channels-last, otherwise | ≤ 64 channels | each row's slice of those channels | the group's channels, padded to whole vectors |
//!
//! Channels-first keeps a channel's two passes (statistics, then normalization) back to
//! back while its values are in cache; `S = 1` is a `[rows][channels]` matrix and goes
//! the channels-last way.
//!
//! Reductions accumulate in f32 vectors for at most [`BLOCK`] chunks, then merge the
//! block into f64 per channel, so f32 rounding never builds up over a long channel.

use core::ops::Range;

use crate::lanes::{load_tail, split, split_mut, store_tail, LANES, V};
use crate::moments::Moments;
use crate::shape::{Layout, Shape};

/// Lanes of the longest pattern, and the most channels in a group.
pub(crate) const MAX_LANES: usize = 64;
/// Vectors of the longest pattern.
const MAX_VECS: usize = MAX_LANES / LANES;
/// Chunks (so values per lane) accumulated in f32 before a block is merged in f64.
/// A lane's sum then carries at most ~64 roundings; channels-first merges every
/// 2048 values, channels-last every 64 rows.
const BLOCK: usize = 64;

/// Per-channel values of a group, indexed by the channel's offset in the group.
pub(crate) type PerChannel<T> = [T; MAX_LANES];

/// How one call walks its tensor. Built from a shape whose length was checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    kind: Kind,
    batch: usize,
    channels: usize,
    spatial: usize,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    ChannelsFirst,
    Packed { lanes: usize },
    Tiled,
}

/// Channels `first .. first + channels`, walked together.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Group {
    /// The group's first channel.
    pub(crate) first: usize,
    /// How many channels the group holds; also the period of its lane pattern.
    pub(crate) channels: usize,
    /// Lanes of a chunk: a multiple of [`LANES`], at most [`MAX_LANES`].
    lanes: usize,
}

impl Group {
    fn vecs(&self) -> usize {
        self.lanes / LANES
    }

    /// Channel offsets in this group.
    pub(crate) fn offsets(&self) -> Range<usize> {
        0..self.channels
    }
}

impl Plan {
    /// The plan for `shape`, whose element count must already be known to fit.
    pub(crate) fn new(shape: Shape) -> Plan {
        let kind = match shape.walk() {
            Layout::ChannelsFirst => Kind::ChannelsFirst,
            Layout::ChannelsLast => match packed_lanes(shape.channels) {
                Some(lanes) => Kind::Packed { lanes },
                None => Kind::Tiled,
            },
        };
        Plan {
            kind,
            batch: shape.batch,
            channels: shape.channels,
            spatial: shape.spatial,
        }
    }

    /// The groups, in channel order.
    pub(crate) fn groups(&self) -> impl Iterator<Item = Group> {
        let (kind, channels) = (self.kind, self.channels);
        let size = match kind {
            Kind::ChannelsFirst => 1,
            Kind::Packed { .. } => channels.max(1),
            Kind::Tiled => MAX_LANES,
        };
        (0..channels).step_by(size).map(move |first| {
            let n = size.min(channels - first);
            let lanes = match kind {
                // Four vectors, all one channel: four independent accumulators.
                Kind::ChannelsFirst => 4 * LANES,
                Kind::Packed { lanes } => lanes,
                Kind::Tiled => n.next_multiple_of(LANES),
            };
            Group {
                first,
                channels: n,
                lanes,
            }
        })
    }

    /// The contiguous index ranges that hold group `g`'s values, in order. Every
    /// range starts at lane 0 of the pattern.
    fn segments(&self, g: Group) -> impl Iterator<Item = Range<usize>> {
        let (c, s, m) = (self.channels, self.spatial, self.batch * self.spatial);
        let end = m * c;
        // (first start, step between starts, length, count)
        let (base, step, len, count) = match self.kind {
            Kind::ChannelsFirst => (g.first * s, c * s, s, self.batch),
            Kind::Packed { lanes } => (0, lanes, lanes, end.div_ceil(lanes)),
            Kind::Tiled => (g.first, c, g.channels, m),
        };
        (0..count).map(move |i| {
            let start = base + i * step;
            start..end.min(start + len)
        })
    }
}

/// The lane count of the packed channels-last plan for `c` channels: the smallest
/// multiple of `lcm(c, 8)` that is at least 32, if it fits in [`MAX_LANES`].
fn packed_lanes(c: usize) -> Option<usize> {
    if c == 0 {
        return None;
    }
    let lcm = c / gcd(c, LANES) * LANES;
    (lcm <= MAX_LANES).then(|| lcm * 32usize.div_ceil(lcm))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Vector `j` of the pattern of `g`: lane `l` holds `per_channel[(8j + l) % channels]`.
fn pattern<const NV: usize>(g: Group, per_channel: &PerChannel<f32>) -> [V; NV] {
    core::array::from_fn(|j| {
        V::new(core::array::from_fn(|l| {
            per_channel[(j * LANES + l) % g.channels]
        }))
    })
}

/// Calls `$f::<NV>($args)` with `NV` = the group's vectors per chunk, a constant, so
/// the accumulators and patterns of the inner loops live in registers.
macro_rules! by_vecs {
    ($g:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $g.vecs() {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            _ => $f::<MAX_VECS>($($arg),*),
        }
    };
}

/// Two sums per lane in f32, for at most [`BLOCK`] chunks.
struct Block<const NV: usize> {
    a: [V; NV],
    b: [V; NV],
    chunks: usize,
    values: usize,
}

impl<const NV: usize> Block<NV> {
    fn new() -> Self {
        Block {
            a: [V::ZERO; NV],
            b: [V::ZERO; NV],
            chunks: 0,
            values: 0,
        }
    }

    /// Counts a chunk of `values` values; true when the block is full.
    fn count(&mut self, values: usize) -> bool {
        self.chunks += 1;
        self.values += values;
        self.chunks == BLOCK
    }

    /// Empties the block: per channel of `g`, the f64 sums of `a` and of `b`, and the
    /// number of values each channel had in the block.
    fn take(&mut self, g: Group) -> (PerChannel<f64>, PerChannel<f64>, usize) {
        let mut sa = [0.0; MAX_LANES];
        let mut sb = [0.0; MAX_LANES];
        for j in 0..NV {
            let (a, b) = (self.a[j].to_array(), self.b[j].to_array());
            for l in 0..LANES {
                let c = (j * LANES + l) % g.channels;
                sa[c] += f64::from(a[l]);
                sb[c] += f64::from(b[l]);
            }
        }
        let per_channel = self.values / g.channels;
        *self = Block::new();
        (sa, sb, per_channel)
    }
}

/// Channel moments of group `g` of `x`: `out[i]` for channel `g.first + i`.
///
/// Shifted sums: per channel a shift `k` (its first finite value, later the mean so
/// far) is subtracted before summing `d = x − k` and `d²`, so the sums do not cancel
/// however large the mean is against the spread.
pub(crate) fn moments(x: &[f32], plan: &Plan, g: Group, out: &mut PerChannel<Moments>) {
    by_vecs!(g, moments_nv(x, plan, g, out))
}

fn moments_nv<const NV: usize>(x: &[f32], plan: &Plan, g: Group, out: &mut PerChannel<Moments>) {
    *out = [Moments::EMPTY; MAX_LANES];
    let mut segments = plan.segments(g).peekable();
    let Some(first) = segments.peek() else {
        return;
    };
    let mut k = [0.0; MAX_LANES];
    for (i, &v) in x[first.clone()].iter().take(g.channels).enumerate() {
        k[i] = if v.is_finite() { v } else { 0.0 };
    }
    let mut kv = pattern::<NV>(g, &k);
    let mut block = Block::<NV>::new();
    let mut flush = |block: &mut Block<NV>, kv: &mut [V; NV]| {
        let (sd, sq, n) = block.take(g);
        if n == 0 {
            return;
        }
        let nf = n as f64;
        for i in g.offsets() {
            let part = Moments {
                count: n as u64,
                mean: f64::from(k[i]) + sd[i] / nf,
                m2: sq[i] - sd[i] * sd[i] / nf,
            };
            out[i] = out[i].merge(part);
            let mean = out[i].mean as f32;
            if mean.is_finite() {
                k[i] = mean;
            }
        }
        *kv = pattern::<NV>(g, &k);
    };
    for seg in segments {
        for chunk in x[seg].chunks(NV * LANES) {
            let (full, tail) = split(chunk);
            if let Ok(full) = <&[[f32; LANES]; NV]>::try_from(full) {
                for j in 0..NV {
                    let d = V::new(full[j]) - kv[j];
                    block.a[j] += d;
                    block.b[j] = d.mul_add(d, block.b[j]);
                }
            } else {
                for (j, v) in full.iter().enumerate() {
                    let d = V::new(*v) - kv[j];
                    block.a[j] += d;
                    block.b[j] = d.mul_add(d, block.b[j]);
                }
            }
            if !tail.is_empty() {
                let j = full.len();
                let d = load_tail(tail, kv[j]) - kv[j];
                block.a[j] += d;
                block.b[j] = d.mul_add(d, block.b[j]);
            }
            if block.count(chunk.len()) {
                flush(&mut block, &mut kv);
            }
        }
    }
    flush(&mut block, &mut kv);
}

/// For group `g`: per channel, `Σdy` and `Σdy·(x − mu)`, in f64.
pub(crate) fn grad_sums(
    dy: &[f32],
    x: &[f32],
    plan: &Plan,
    g: Group,
    mu: &PerChannel<f32>,
) -> (PerChannel<f64>, PerChannel<f64>) {
    by_vecs!(g, grad_sums_nv(dy, x, plan, g, mu))
}

fn grad_sums_nv<const NV: usize>(
    dy: &[f32],
    x: &[f32],
    plan: &Plan,
    g: Group,
    mu: &PerChannel<f32>,
) -> (PerChannel<f64>, PerChannel<f64>) {
    let muv = pattern::<NV>(g, mu);
    let mut sum_dy = [0.0; MAX_LANES];
    let mut sum_dyx = [0.0; MAX_LANES];
    let mut block = Block::<NV>::new();
    let mut flush = |block: &mut Block<NV>| {
        let (a, b, _) = block.take(g);
        for i in g.offsets() {
            sum_dy[i] += a[i];
            sum_dyx[i] += b[i];
        }
    };
    for seg in plan.segments(g) {
        let (dys, xs) = (&dy[seg.clone()], &x[seg]);
        for (dc, xc) in dys.chunks(NV * LANES).zip(xs.chunks(NV * LANES)) {
            let ((dfull, dtail), (xfull, xtail)) = (split(dc), split(xc));
            for (j, (d, x)) in dfull.iter().zip(xfull).enumerate() {
                let d = V::new(*d);
                block.a[j] += d;
                block.b[j] = d.mul_add(V::new(*x) - muv[j], block.b[j]);
            }
            if !dtail.is_empty() {
                // Padding dy with 0 and x with mu adds nothing to either sum.
                let j = dfull.len();
                let d = load_tail(dtail, V::ZERO);
                block.a[j] += d;
                block.b[j] = d.mul_add(load_tail(xtail, muv[j]) - muv[j], block.b[j]);
            }
            if block.count(dc.len()) {
                flush(&mut block);
            }
        }
    }
    flush(&mut block);
    (sum_dy, sum_dyx)
}

/// `y = x·a + b` per channel over group `g`, reading `x` from `src`, or from `dst`
/// itself when `src` is `None`.
pub(crate) fn affine(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    g: Group,
    a: &PerChannel<f32>,
    b: &PerChannel<f32>,
) {
    by_vecs!(g, affine_nv(src, dst, plan, g, a, b))
}

fn affine_nv<const NV: usize>(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    g: Group,
    a: &PerChannel<f32>,
    b: &PerChannel<f32>,
) {
    let (av, bv) = (pattern::<NV>(g, a), pattern::<NV>(g, b));
    map::<NV>(src, dst, plan, g, |j, x| x.mul_add(av[j], bv[j]));
}

/// `y = (x − mu)·a + b` per channel over group `g`; `src` as in [`affine`].
pub(crate) fn centered(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    g: Group,
    mu: &PerChannel<f32>,
    a: &PerChannel<f32>,
    b: &PerChannel<f32>,
) {
    by_vecs!(g, centered_nv(src, dst, plan, g, mu, a, b))
}

fn centered_nv<const NV: usize>(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    g: Group,
    mu: &PerChannel<f32>,
    a: &PerChannel<f32>,
    b: &PerChannel<f32>,
) {
    let (muv, av, bv) = (
        pattern::<NV>(g, mu),
        pattern::<NV>(g, a),
        pattern::<NV>(g, b),
    );
    map::<NV>(src, dst, plan, g, |j, x| (x - muv[j]).mul_add(av[j], bv[j]));
}

/// Applies `f(j, x)` (with `j` the vector's place in the pattern) to every vector of
/// group `g`, from `src` (or `dst` itself) into `dst`.
#[inline(always)]
fn map<const NV: usize>(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    g: Group,
    f: impl Fn(usize, V) -> V,
) {
    let width = NV * LANES;
    for seg in plan.segments(g) {
        match src {
            Some(src) => {
                for (xc, yc) in src[seg.clone()]
                    .chunks(width)
                    .zip(dst[seg].chunks_mut(width))
                {
                    let ((xfull, xtail), (yfull, ytail)) = (split(xc), split_mut(yc));
                    for (j, (x, y)) in xfull.iter().zip(yfull).enumerate() {
                        *y = f(j, V::new(*x)).to_array();
                    }
                    if !xtail.is_empty() {
                        store_tail(ytail, f(xfull.len(), load_tail(xtail, V::ZERO)));
                    }
                }
            }
            None => {
                for yc in dst[seg].chunks_mut(width) {
                    let (yfull, ytail) = split_mut(yc);
                    let j_tail = yfull.len();
                    for (j, y) in yfull.iter_mut().enumerate() {
                        *y = f(j, V::new(*y)).to_array();
                    }
                    if !ytail.is_empty() {
                        let v = f(j_tail, load_tail(ytail, V::ZERO));
                        store_tail(ytail, v);
                    }
                }
            }
        }
    }
}

/// `dx = dy·k + ((x − mu)·a + b)` per channel over group `g`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn grad_input(
    dy: &[f32],
    x: &[f32],
    dx: &mut [f32],
    plan: &Plan,
    g: Group,
    [k, mu, a, b]: [&PerChannel<f32>; 4],
) {
    by_vecs!(g, grad_input_nv(dy, x, dx, plan, g, [k, mu, a, b]))
}

fn grad_input_nv<const NV: usize>(
    dy: &[f32],
    x: &[f32],
    dx: &mut [f32],
    plan: &Plan,
    g: Group,
    [k, mu, a, b]: [&PerChannel<f32>; 4],
) {
    let (kv, muv, av, bv) = (
        pattern::<NV>(g, k),
        pattern::<NV>(g, mu),
        pattern::<NV>(g, a),
        pattern::<NV>(g, b),
    );
    let f = |j: usize, dy: V, x: V| dy.mul_add(kv[j], (x - muv[j]).mul_add(av[j], bv[j]));
    let width = NV * LANES;
    for seg in plan.segments(g) {
        let chunks = dy[seg.clone()]
            .chunks(width)
            .zip(x[seg.clone()].chunks(width))
            .zip(dx[seg].chunks_mut(width));
        for ((dc, xc), oc) in chunks {
            let ((dfull, dtail), (xfull, xtail), (ofull, otail)) =
                (split(dc), split(xc), split_mut(oc));
            for (j, ((d, x), o)) in dfull.iter().zip(xfull).zip(ofull).enumerate() {
                *o = f(j, V::new(*d), V::new(*x)).to_array();
            }
            if !dtail.is_empty() {
                let j = dfull.len();
                let v = f(j, load_tail(dtail, V::ZERO), load_tail(xtail, V::ZERO));
                store_tail(otail, v);
            }
        }
    }
}
