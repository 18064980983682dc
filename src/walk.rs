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
//! Up to [`BAND`] consecutive groups form a *band*, walked together in memory order:
//! in the tiled plan the band's channels lie together in every row, and the band
//! walks row by row, each row's slice of all its groups in turn; in channels-first
//! the band's channels' runs lie back to back in every sample.
//!
//! Channels-first keeps a channel's two passes (statistics, then normalization) back to
//! back while its values are in cache; `S = 1` is a `[rows][channels]` matrix and goes
//! the channels-last way.
//!
//! Reductions accumulate in f32 vectors for at most [`BLOCK`] chunks, then spill the
//! block into f64 lanes, so f32 rounding never builds up over a long channel.

use core::ops::Range;

use crate::lanes::{last_vector, load_tail, split, split_mut, store_tail, LANES, V};
use crate::moments::Moments;
use crate::shape::{Layout, Shape};

/// Lanes of the longest pattern, and the most channels in a group.
pub(crate) const MAX_LANES: usize = 64;
/// Vectors of the longest pattern.
const MAX_VECS: usize = MAX_LANES / LANES;
/// Chunks (so values per lane) accumulated in f32 before a block is merged in f64.
/// A lane's f32 sum then carries at most ~64 roundings; channels-first spills every
/// 2048 values, channels-last every 64 rows.
const BLOCK: usize = 64;

/// Per-channel values of a group, indexed by the channel's offset in the group.
pub(crate) type PerChannel<T> = [T; MAX_LANES];

/// Most groups in a [`Band`]. Channels-last with up to `BAND · MAX_LANES` = 256
/// channels reads each row once, in memory order; wider tensors once per band of 256
/// channels. Callers keep per-channel state for a band on the stack, which bounds
/// it: 64-bit targets take 4 groups (train forward: ~16 KiB of stack); 32-bit targets
/// (microcontrollers: no DRAM prefetcher to please, little stack) one.
pub(crate) const BAND: usize = if cfg!(target_pointer_width = "64") {
    4
} else {
    1
};

/// Bytes of the tensors a channels-first band reads twice, to stay cached between
/// its reduction and its elementwise pass: 2 MiB of L2 and a little of L3. Measured
/// on S3 NCHW (400 KB channels): bands of 4 channels beat bands of 2 (train) and 1
/// (backward, 3.2 MB reread) even though they overflow L2, as L3 serves the reread.
const REUSE_BYTES: usize = 4 << 20;

/// Groups walked together: up to [`BAND`] groups in the tiled channels-last plan and
/// in channels-first (see [`Plan::bands`]), one group otherwise. Channels-first: a
/// band reads, per sample, its channels' runs back to back (one stream the prefetcher
/// follows, instead of one run of S values per channel far from the last). In the tiled plan a band's channels are contiguous in every row,
/// and the band walks row by row, each row's slice of all its groups in turn: memory
/// order. Walked group after group instead, every group would read a quarter of each
/// row's cache lines across the whole tensor, a pattern the hardware prefetcher does
/// not follow, and x would come from DRAM once per group.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Band {
    groups: [Group; BAND],
    len: usize,
}

impl Band {
    /// A band of the one group `g`.
    fn one(g: Group) -> Band {
        Band {
            groups: [g; BAND],
            len: 1,
        }
    }

    /// The band's groups, in channel order: consecutive channels. In the tiled plan
    /// every group but the last holds [`MAX_LANES`] channels; in channels-first each
    /// holds one.
    pub(crate) fn groups(&self) -> &[Group] {
        &self.groups[..self.len]
    }

    /// The band's first channel.
    pub(crate) fn first(&self) -> usize {
        self.groups[0].first
    }

    /// How many channels the band holds.
    pub(crate) fn channels(&self) -> usize {
        let last = self.groups[self.len - 1];
        last.first + last.channels - self.first()
    }
}

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
        self.groups_of(1)
    }

    /// The groups, with `first_size` channels per group in channels-first.
    fn groups_of(&self, first_size: usize) -> impl Iterator<Item = Group> {
        let (kind, channels) = (self.kind, self.channels);
        let size = match kind {
            Kind::ChannelsFirst => first_size,
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

    /// The groups for an elementwise map ([`affine`]), which needs no reduction first:
    /// as [`groups`](Self::groups), except that channels-first takes up to
    /// [`MAX_LANES`] channels at once, so that [`affine`] can walk them in memory order.
    pub(crate) fn map_groups(&self) -> impl Iterator<Item = Group> {
        self.groups_of(MAX_LANES)
    }

    /// The [`groups`](Self::groups) in bands, for a kernel that reads `reread`
    /// tensors a second time after its reduction (train 1, backward 2).
    pub(crate) fn bands(&self, reread: usize) -> impl Iterator<Item = Band> {
        // Channels-first: as many channels as keep the reread tensors within
        // REUSE_BYTES, so that the second pass finds them cached (S3: a channel is
        // 400 KB, so train and backward take 4).
        // Saturating: with no channels, batch·spatial is not bounded by any slice.
        let channel_bytes = (self.batch.saturating_mul(self.spatial)).saturating_mul(4 * reread);
        let per_band = match self.kind {
            Kind::Tiled => BAND,
            Kind::ChannelsFirst => (REUSE_BYTES / channel_bytes.max(1)).clamp(1, BAND),
            Kind::Packed { .. } => 1,
        };
        self.bands_of(self.groups(), per_band)
    }

    /// The [`map_groups`](Self::map_groups) in bands.
    pub(crate) fn map_bands(&self) -> impl Iterator<Item = Band> {
        let per_band = match self.kind {
            Kind::Tiled => BAND,
            // Channels-first map groups hold 64 channels already.
            _ => 1,
        };
        self.bands_of(self.map_groups(), per_band)
    }

    fn bands_of(
        &self,
        mut groups: impl Iterator<Item = Group>,
        per_band: usize,
    ) -> impl Iterator<Item = Band> {
        core::iter::from_fn(move || {
            let first = groups.next()?;
            let mut band = Band {
                groups: [first; BAND],
                len: 1,
            };
            while band.len < per_band {
                let Some(g) = groups.next() else { break };
                band.groups[band.len] = g;
                band.len += 1;
            }
            Some(band)
        })
    }

    /// The contiguous index ranges that hold the values of `band`, in order. Every
    /// range starts at lane 0 of the first group's pattern; in a band of several
    /// groups, chunk `b` of a range is group `b`'s: [`MAX_LANES`] values (tiled plan)
    /// or a run of `spatial` values (channels-first).
    fn segments(&self, band: &Band) -> impl Iterator<Item = Range<usize>> {
        let (c, s, m) = (self.channels, self.spatial, self.batch * self.spatial);
        let end = m * c;
        let first = band.first();
        // (first start, step between starts, length, count)
        let (base, step, len, count) = match self.kind {
            // No values: nothing to walk, however large the batch (and `c·s`, which
            // only a non-empty tensor bounds, may not even fit).
            _ if end == 0 => (0, 0, 0, 0),
            Kind::ChannelsFirst => (first * s, c * s, band.channels() * s, self.batch),
            Kind::Packed { lanes } => (0, lanes, lanes, end.div_ceil(lanes)),
            Kind::Tiled => (first, c, band.channels(), m),
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
/// Counts channels instead of dividing: this runs once per group, and with one-channel
/// groups (channels-first) groups are short enough for a division per lane to show.
fn pattern<const NV: usize>(g: Group, per_channel: &PerChannel<f32>) -> [V; NV] {
    if g.channels == 1 {
        return [V::splat(per_channel[0]); NV];
    }
    let mut c = 0;
    core::array::from_fn(|_| {
        V::new(core::array::from_fn(|_| {
            let v = per_channel[c];
            c += 1;
            if c == g.channels {
                c = 0;
            }
            v
        }))
    })
}

/// Calls `$f::<NV>($args)` with `NV` = the group's vectors per chunk, a constant, so
/// the accumulators and patterns of the inner loops live in registers. The `$f` are
/// `#[inline(never)]`: inlined, the eight arms' stack frames add up instead of sharing
/// one place (on AArch64, 52 KiB of stack for a backward pass instead of ~15).
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

/// What a reduction does with the vectors [`visit`] hands it.
trait Reduce<const NV: usize> {
    /// Pads for the missing lanes of a tail vector at place `j`, for `x` and `y`:
    /// values that add nothing to the sums.
    fn pad(&self, j: usize) -> (V, V);
    /// Adds the vectors at place `j` of the pattern (`j < NV`, a constant after
    /// unrolling, so the accumulators stay in registers).
    fn add(&mut self, j: usize, x: V, y: V);
    /// Called after at most [`BLOCK`] adds per accumulator, with the values per channel
    /// added since the last call. Returning true stops the walk.
    fn full(&mut self, values: usize) -> bool;
}

/// Hands every vector of `band`'s values of `x` (and `y` at the same places) to the
/// reduction of its group, `rs[b]` for group `b`; returns how many values per channel
/// came after the last [`Reduce::full`], or 0 when the one reduction of a one-group
/// band stopped the walk. (In a band of several groups, a reduction that asks to stop
/// is walked to the end with the others: the caller redoes that group on its own.)
#[inline(always)]
fn visit<const NV: usize, R: Reduce<NV>>(
    x: &[f32],
    y: &[f32],
    plan: &Plan,
    band: &Band,
    rs: &mut [R],
) -> usize {
    // Per reduction: adds since its last `full`, and values per channel in them.
    let (mut adds, mut values) = ([0; BAND], [0; BAND]);
    // True when the walk must stop.
    let mut count = |b: usize, r: &mut R, values_per_channel: usize| {
        adds[b] += 1;
        values[b] += values_per_channel;
        if adds[b] == BLOCK {
            let v = values[b];
            (adds[b], values[b]) = (0, 0);
            return r.full(v) && band.len == 1;
        }
        false
    };
    // (`max(1)`: with spatial 0 segments are empty, and `chunks(0)` would panic.)
    let (one_channel, s) = (
        matches!(plan.kind, Kind::ChannelsFirst),
        plan.spatial.max(1),
    );
    for seg in plan.segments(band) {
        let (xs, ys) = (&x[seg.clone()], &y[seg]);
        if one_channel {
            // One run of `s` values per channel of the band, back to back.
            for (b, ((xs, ys), r)) in xs.chunks(s).zip(ys.chunks(s)).zip(&mut *rs).enumerate() {
                // Every lane is the same channel: whole vectors go to the accumulators
                // in turn, the tail as the run's last (overlapping) vector.
                let ((xv, xt), (yv, _)) = (split(xs), split(ys));
                let (xc, xr) = xv.as_chunks::<NV>();
                let (yc, yr) = yv.as_chunks::<NV>();
                for (xc, yc) in xc.iter().zip(yc) {
                    for j in 0..NV {
                        r.add(j, V::new(xc[j]), V::new(yc[j]));
                    }
                    if count(b, r, NV * LANES) {
                        return 0;
                    }
                }
                if !xr.is_empty() || !xt.is_empty() {
                    for j in 0..NV {
                        if j < xr.len() {
                            r.add(j, V::new(xr[j]), V::new(yr[j]));
                        } else if j == xr.len() && !xt.is_empty() {
                            let (px, py) = r.pad(j);
                            r.add(j, last_vector(xs, px), last_vector(ys, py));
                        }
                    }
                    if count(b, r, xr.len() * LANES + xt.len()) {
                        return 0;
                    }
                }
            }
        } else {
            let chunks = xs.chunks(NV * LANES).zip(ys.chunks(NV * LANES));
            let mut per_channel = 0;
            for ((xc, yc), r) in chunks.zip(rs.iter_mut()) {
                if per_channel == 0 {
                    // Rows in this segment (tiled: 1; packed: lanes / channels).
                    per_channel = xc.len() / band.groups[0].channels;
                }
                let ((xv, xt), (yv, yt)) = (split(xc), split(yc));
                if let (Ok(xv), Ok(yv)) = (
                    <&[[f32; LANES]; NV]>::try_from(xv),
                    <&[[f32; LANES]; NV]>::try_from(yv),
                ) {
                    for j in 0..NV {
                        r.add(j, V::new(xv[j]), V::new(yv[j]));
                    }
                } else {
                    for j in 0..NV {
                        if j < xv.len() {
                            r.add(j, V::new(xv[j]), V::new(yv[j]));
                        } else if j == xv.len() && !xt.is_empty() {
                            let (px, py) = r.pad(j);
                            r.add(j, load_tail(xt, px), load_tail(yt, py));
                        }
                    }
                }
            }
            // Every group of the band has seen as many rows.
            let mut stop = false;
            for (b, r) in rs.iter_mut().enumerate() {
                stop |= count(b, r, per_channel);
            }
            if stop {
                return 0;
            }
        }
    }
    values[0]
}

/// Per-lane sums in f64: f32 blocks spill here, so f32 rounding never builds up over a
/// long channel. Spilling is a few vector conversions with no per-channel work; lanes
/// become channels only in [`Wide::take`].
struct Wide<const NV: usize> {
    a: [[f64; LANES]; NV],
    b: [[f64; LANES]; NV],
    spilled: bool,
}

impl<const NV: usize> Wide<NV> {
    const fn new() -> Self {
        Wide {
            a: [[0.0; LANES]; NV],
            b: [[0.0; LANES]; NV],
            spilled: false,
        }
    }

    /// Adds the f32 sums `a`, `b` to the f64 lanes and zeroes them.
    fn spill(&mut self, a: &mut [V; NV], b: &mut [V; NV]) {
        for j in 0..NV {
            let (va, vb) = (a[j].to_array(), b[j].to_array());
            for l in 0..LANES {
                self.a[j][l] += f64::from(va[l]);
                self.b[j][l] += f64::from(vb[l]);
            }
        }
        *a = [V::ZERO; NV];
        *b = [V::ZERO; NV];
        self.spilled = true;
    }

    /// Empties the f64 lanes and the f32 sums `a`, `b` into per-channel sums: adds
    /// channel `i`'s part of `a` to `sa[i]` and of `b` to `sb[i]`.
    fn take(
        &mut self,
        g: Group,
        a: &mut [V; NV],
        b: &mut [V; NV],
        sa: &mut PerChannel<f64>,
        sb: &mut PerChannel<f64>,
    ) {
        if g.channels == 1 {
            // One channel (channels-first): this runs once per channel, which with short
            // channels (S = 49, N = 8) costs as much as the channel itself unless the
            // vectors are first added in f32 (NV − 1 more roundings per lane, against
            // the block's 64) and f64 lanes are read only when a block was spilled.
            let fold = |v: &[V; NV]| {
                let sum = v.iter().fold(V::ZERO, |s, &v| s + v).to_array();
                sum.iter().map(|&v| f64::from(v)).sum::<f64>()
            };
            sa[0] += fold(a);
            sb[0] += fold(b);
            if self.spilled {
                sa[0] += self.a.iter().flatten().sum::<f64>();
                sb[0] += self.b.iter().flatten().sum::<f64>();
            }
        } else {
            self.spill(a, b);
            let mut c = 0;
            for j in 0..NV {
                for l in 0..LANES {
                    sa[c] += self.a[j][l];
                    sb[c] += self.b[j][l];
                    c += 1;
                    if c == g.channels {
                        c = 0;
                    }
                }
            }
        }
        if self.spilled {
            // Unspilled lanes are still zero: with short channels this saves a
            // store of 2·NV·LANES f64 per channel.
            *self = Wide::new();
        }
        *a = [V::ZERO; NV];
        *b = [V::ZERO; NV];
    }
}

/// Channel moments of `band` of `x`: `out[i]` for channel `band.first() + i`.
///
/// Shifted sums: per channel a shift `k` (its first finite value, then the mean of the
/// first block) is subtracted before summing `d = x − k` and `d²`, so the sums do not
/// cancel however large the mean is against the spread. After the first block the
/// shift stays fixed, so later blocks only spill into f64 lanes, with no per-channel
/// work until the end.
pub(crate) fn moments(x: &[f32], plan: &Plan, band: &Band, out: &mut [Moments]) {
    by_vecs!(band.groups[0], moments_nv(x, plan, band, out))
}

struct MomentSums<'a, const NV: usize> {
    g: Group,
    sum: [V; NV],
    sq: [V; NV],
    k: PerChannel<f32>,
    kv: [V; NV],
    wide: Wide<NV>,
    reshifted: bool,
    /// Values per channel spilled into `wide` since the first block.
    spilled: usize,
    /// Whether a first block summed far from its mean may still start the walk over.
    may_restart: bool,
    /// Set when it does: the walk stops and starts over with the first block's mean.
    restart: bool,
    /// Where the group's moments go: `None` only in [`EMPTY`](Self::EMPTY) (a
    /// constant cannot hold a `&mut []`).
    out: Option<&'a mut [Moments]>,
}

impl<const NV: usize> MomentSums<'_, NV> {
    /// Merges everything summed so far into `out` as one part of `values` values per
    /// channel, and shifts the rest by the mean so far.
    fn merge(&mut self, values: usize) {
        let (mut sd, mut sq) = ([0.0; MAX_LANES], [0.0; MAX_LANES]);
        let g = self.g;
        self.wide
            .take(g, &mut self.sum, &mut self.sq, &mut sd, &mut sq);
        if values == 0 {
            return;
        }
        let n = values as f64;
        let first = !self.reshifted;
        let out = self.out.as_deref_mut().unwrap_or_default();
        for i in g.offsets().take(out.len()) {
            let part = Moments {
                count: values as u64,
                mean: f64::from(self.k[i]) + sd[i] / n,
                m2: sq[i] - sd[i] * sd[i] / n,
            };
            // The first shift is one value of the channel, which may lie far from the
            // rest (an outlier). Then Σd² ≫ m2 and m2 = Σd² − (Σd)²/n cancels, amplifying
            // the f32 rounding of Σd² by Σd²/m2: past 16, sum the block again around
            // its own mean (it is in cache). Later shifts are means, close to the data.
            if first && self.may_restart && sd[i] * sd[i] / n > 15.0 * part.m2 {
                self.restart = true;
            }
            out[i] = out[i].merge(part);
            let mean = out[i].mean as f32;
            if mean.is_finite() {
                self.k[i] = mean;
            }
        }
        self.kv = pattern::<NV>(g, &self.k);
    }
}

impl<const NV: usize> Reduce<NV> for MomentSums<'_, NV> {
    #[inline(always)]
    fn pad(&self, j: usize) -> (V, V) {
        // x = k adds 0 to Σ(x − k) and Σ(x − k)².
        (self.kv[j], self.kv[j])
    }

    #[inline(always)]
    fn add(&mut self, j: usize, x: V, _: V) {
        let d = x - self.kv[j];
        self.sum[j] += d;
        self.sq[j] = d.mul_add(d, self.sq[j]);
    }

    #[inline(always)]
    fn full(&mut self, values: usize) -> bool {
        if self.reshifted {
            self.wide.spill(&mut self.sum, &mut self.sq);
            self.spilled += values;
        } else {
            self.merge(values);
            self.reshifted = true;
        }
        self.restart
    }
}

impl<'a, const NV: usize> MomentSums<'a, NV> {
    /// No group yet: [`init`](Self::init) sets one up in place.
    const EMPTY: Self = MomentSums {
        g: Group {
            first: 0,
            channels: 0,
            lanes: 0,
        },
        sum: [V::ZERO; NV],
        sq: [V::ZERO; NV],
        k: [0.0; MAX_LANES],
        kv: [V::ZERO; NV],
        wide: Wide::new(),
        reshifted: false,
        spilled: 0,
        may_restart: true,
        restart: false,
        out: None,
    };

    /// Sets up the sums of group `g`, shifted by its first values in `x`, merged into
    /// `out`. In place, on an [`EMPTY`](Self::EMPTY) reduction: built by value and
    /// moved into the band's array, each (~1 KiB with its f64 lanes) cost a memcpy,
    /// which showed with short channels-first bands (S5 NCHW).
    fn init(&mut self, x: &[f32], plan: &Plan, g: Group, out: &'a mut [Moments]) {
        out.fill(Moments::EMPTY);
        self.k = [0.0; MAX_LANES];
        if let Some(first) = plan.segments(&Band::one(g)).next() {
            for (i, &v) in x[first].iter().take(g.channels).enumerate() {
                self.k[i] = if v.is_finite() { v } else { 0.0 };
            }
        }
        self.kv = pattern::<NV>(g, &self.k);
        (self.g, self.out) = (g, Some(out));
    }
}

#[inline(never)] // see `by_vecs!`
fn moments_nv<const NV: usize>(x: &[f32], plan: &Plan, band: &Band, out: &mut [Moments]) {
    // One-group bands (every channels-first channel) must not pay for setting up
    // BAND reductions.
    if band.len == 1 {
        moments_nb::<NV, 1>(x, plan, band, out)
    } else {
        moments_nb::<NV, BAND>(x, plan, band, out)
    }
}

fn moments_nb<const NV: usize, const NB: usize>(
    x: &[f32],
    plan: &Plan,
    band: &Band,
    out: &mut [Moments],
) {
    let n = band.len;
    // Group b's channels are out[g.first − band.first() ..]; places past the band's
    // groups get none.
    let mut rest = out;
    let mut rs = [MomentSums::<NV>::EMPTY; NB];
    for (r, &g) in rs.iter_mut().zip(band.groups()) {
        let take = g.channels.min(rest.len());
        let (head, tail) = core::mem::take(&mut rest).split_at_mut(take);
        rest = tail;
        r.init(x, plan, g, head);
    }
    let rs = &mut rs[..n];
    let rest = visit(x, x, plan, band, rs);
    for r in rs {
        if !r.restart {
            // Everything after the first block was summed with one shift: one more
            // part (or the only one, for a channel of one block, which may ask to
            // restart).
            r.merge(r.spilled + rest);
        }
        if r.restart {
            // Once more from the start, this group alone, shifted by the first
            // block's mean.
            if let Some(out) = r.out.as_deref_mut() {
                out.fill(Moments::EMPTY);
            }
            r.wide = Wide::new();
            (r.sum, r.sq) = ([V::ZERO; NV], [V::ZERO; NV]);
            (r.reshifted, r.spilled, r.may_restart, r.restart) = (false, 0, false, false);
            let rest = visit(x, x, plan, &Band::one(r.g), core::slice::from_mut(r));
            r.merge(r.spilled + rest);
        }
    }
}

/// For `band`: per channel, `Σdy` and `Σdy·(x − mu)`, in f64, as
/// `sums[b] = [Σdy, Σdy·(x − mu)]` for group `b` with `mu[b]`.
pub(crate) fn grad_sums(
    dy: &[f32],
    x: &[f32],
    plan: &Plan,
    band: &Band,
    mu: &[PerChannel<f32>],
    sums: &mut [[PerChannel<f64>; 2]],
) {
    by_vecs!(band.groups[0], grad_sums_nv(dy, x, plan, band, mu, sums))
}

struct GradSums<const NV: usize> {
    dy: [V; NV],
    dyx: [V; NV],
    muv: [V; NV],
    wide: Wide<NV>,
}

impl<const NV: usize> GradSums<NV> {
    const EMPTY: Self = GradSums {
        dy: [V::ZERO; NV],
        dyx: [V::ZERO; NV],
        muv: [V::ZERO; NV],
        wide: Wide::new(),
    };
}

impl<const NV: usize> Reduce<NV> for GradSums<NV> {
    #[inline(always)]
    fn pad(&self, j: usize) -> (V, V) {
        // dy = 0 and x = mu add nothing to either sum.
        (V::ZERO, self.muv[j])
    }

    #[inline(always)]
    fn add(&mut self, j: usize, dy: V, x: V) {
        self.dy[j] += dy;
        self.dyx[j] = dy.mul_add(x - self.muv[j], self.dyx[j]);
    }

    #[inline(always)]
    fn full(&mut self, _: usize) -> bool {
        self.wide.spill(&mut self.dy, &mut self.dyx);
        false
    }
}

#[inline(never)] // see `by_vecs!`
fn grad_sums_nv<const NV: usize>(
    dy: &[f32],
    x: &[f32],
    plan: &Plan,
    band: &Band,
    mu: &[PerChannel<f32>],
    sums: &mut [[PerChannel<f64>; 2]],
) {
    if band.len == 1 {
        grad_sums_nb::<NV, 1>(dy, x, plan, band, mu, sums)
    } else {
        grad_sums_nb::<NV, BAND>(dy, x, plan, band, mu, sums)
    }
}

fn grad_sums_nb<const NV: usize, const NB: usize>(
    dy: &[f32],
    x: &[f32],
    plan: &Plan,
    band: &Band,
    mu: &[PerChannel<f32>],
    sums: &mut [[PerChannel<f64>; 2]],
) {
    let n = band.len;
    // Built in place from a constant, then patterned: `array::from_fn` built the
    // reductions (~1 KiB each with their f64 lanes) aside and copied them over, a
    // memcpy per band that cost ~15% of S5 NCHW backward (bands of 196 values/channel).
    let mut rs = [GradSums::<NV>::EMPTY; NB];
    for (r, (&g, mu)) in rs.iter_mut().zip(band.groups().iter().zip(mu)) {
        r.muv = pattern::<NV>(g, mu);
    }
    visit(dy, x, plan, band, &mut rs[..n]);
    for ((r, &g), [sum_dy, sum_dyx]) in rs.iter_mut().zip(band.groups()).zip(sums) {
        sum_dy[..g.channels].fill(0.0);
        sum_dyx[..g.channels].fill(0.0);
        r.wide.take(g, &mut r.dy, &mut r.dyx, sum_dy, sum_dyx);
    }
}

/// `y = x·a + b` per channel over `band` (`a[b]`, `b[b]` hold group `b`'s), reading
/// `x` from `src`, or from `dst` itself when `src` is `None`.
pub(crate) fn affine(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    band: &Band,
    a: &[PerChannel<f32>],
    b: &[PerChannel<f32>],
) {
    if let Kind::ChannelsFirst = plan.kind {
        return affine_channels_first(src, dst, plan, band.groups[0], &a[0], &b[0]);
    }
    by_vecs!(band.groups[0], affine_nv(src, dst, plan, band, a, b))
}

/// The patterns of `per_group[b]` for every group `b` of `band` (places past its
/// groups repeat the last).
fn patterns<const NV: usize>(band: &Band, per_group: &[PerChannel<f32>]) -> [[V; NV]; BAND] {
    core::array::from_fn(|b| {
        let b = b.min(band.len - 1);
        pattern::<NV>(band.groups[b], &per_group[b])
    })
}

/// [`affine`] for channels-first, sample by sample: the runs of the group's channels
/// lie back to back within a sample, so memory is read as one stream per sample (which
/// the hardware prefetcher follows) rather than as `batch` short runs per channel.
fn affine_channels_first(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    g: Group,
    a: &PerChannel<f32>,
    b: &PerChannel<f32>,
) {
    if dst.is_empty() {
        // However large the batch: with no values, every run is empty.
        return;
    }
    let (c, s) = (plan.channels, plan.spatial);
    for n in 0..plan.batch {
        for i in g.offsets() {
            let run = (n * c + g.first + i) * s..(n * c + g.first + i + 1) * s;
            let (av, bv) = (V::splat(a[i]), V::splat(b[i]));
            map_run(src.map(|x| &x[run.clone()]), &mut dst[run], |x| {
                x.mul_add(av, bv)
            });
        }
    }
}

/// `y = f(x)` over one contiguous run, from `src` (or `dst` itself) into `dst`.
///
/// A run of at least [`LANES`] values that does not end on a whole vector ends with
/// its last [`LANES`] values as one vector, overlapping the one before: computed from
/// the input before anything is written (so also in place), stored last. Only for
/// patterns whose lanes all hold one channel.
#[inline(always)]
fn map_run(src: Option<&[f32]>, dst: &mut [f32], f: impl Fn(V) -> V) {
    let last = if !dst.len().is_multiple_of(LANES) {
        match src {
            Some(src) => src.last_chunk::<LANES>(),
            None => dst.last_chunk::<LANES>(),
        }
        .map(|x| f(V::new(*x)))
    } else {
        None
    };
    let (yfull, ytail) = split_mut(dst);
    match src {
        Some(src) => {
            let (xfull, xtail) = split(src);
            for (x, y) in xfull.iter().zip(yfull) {
                *y = f(V::new(*x)).to_array();
            }
            if last.is_none() && !xtail.is_empty() {
                store_tail(ytail, f(load_tail(xtail, V::ZERO)));
            }
        }
        None => {
            for y in yfull {
                *y = f(V::new(*y)).to_array();
            }
            if last.is_none() && !ytail.is_empty() {
                let v = f(load_tail(ytail, V::ZERO));
                store_tail(ytail, v);
            }
        }
    }
    if let (Some(v), Some(out)) = (last, dst.last_chunk_mut::<LANES>()) {
        *out = v.to_array();
    }
}

/// `out = f(a, b)` over one contiguous run, overlapping the tail as [`map_run`].
#[inline(always)]
fn zip_run(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(V, V) -> V) {
    let last = match (a.last_chunk::<LANES>(), b.last_chunk::<LANES>()) {
        (Some(x), Some(y)) if !out.len().is_multiple_of(LANES) => Some(f(V::new(*x), V::new(*y))),
        _ => None,
    };
    let ((afull, atail), (bfull, btail), (ofull, otail)) = (split(a), split(b), split_mut(out));
    for ((x, y), o) in afull.iter().zip(bfull).zip(ofull) {
        *o = f(V::new(*x), V::new(*y)).to_array();
    }
    if last.is_none() && !atail.is_empty() {
        store_tail(
            otail,
            f(load_tail(atail, V::ZERO), load_tail(btail, V::ZERO)),
        );
    }
    if let (Some(v), Some(o)) = (last, out.last_chunk_mut::<LANES>()) {
        *o = v.to_array();
    }
}

#[inline(never)] // see `by_vecs!`
fn affine_nv<const NV: usize>(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    band: &Band,
    a: &[PerChannel<f32>],
    b: &[PerChannel<f32>],
) {
    let (av, bv) = (patterns::<NV>(band, a), patterns::<NV>(band, b));
    map::<NV>(src, dst, plan, band, |g, j, x| {
        x.mul_add(av[g][j], bv[g][j])
    });
}

/// `y = (x − mu)·a + b` per channel over `band`; `src` as in [`affine`].
pub(crate) fn centered(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    band: &Band,
    [mu, a, b]: [&[PerChannel<f32>]; 3],
) {
    by_vecs!(
        band.groups[0],
        centered_nv(src, dst, plan, band, [mu, a, b])
    )
}

#[inline(never)] // see `by_vecs!`
fn centered_nv<const NV: usize>(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    band: &Band,
    [mu, a, b]: [&[PerChannel<f32>]; 3],
) {
    let (muv, av, bv) = (
        patterns::<NV>(band, mu),
        patterns::<NV>(band, a),
        patterns::<NV>(band, b),
    );
    map::<NV>(src, dst, plan, band, |g, j, x| {
        (x - muv[g][j]).mul_add(av[g][j], bv[g][j])
    });
}

/// Applies `f(b, j, x)` (with `b` the group in `band` and `j` the vector's place in
/// its pattern) to every vector of `band`, from `src` (or `dst` itself) into `dst`.
#[inline(always)]
fn map<const NV: usize>(
    src: Option<&[f32]>,
    dst: &mut [f32],
    plan: &Plan,
    band: &Band,
    f: impl Fn(usize, usize, V) -> V,
) {
    if let Kind::ChannelsFirst = plan.kind {
        // Runs of `s` values, one per channel of the band; one channel per run, so
        // every vector of a pattern is the same.
        let s = plan.spatial.max(1);
        for seg in plan.segments(band) {
            for (b, y) in dst[seg.clone()].chunks_mut(s).enumerate() {
                let x = src.map(|x| &x[seg.start + b * s..][..y.len()]);
                map_run(x, y, |x| f(b, 0, x));
            }
        }
        return;
    }
    let width = NV * LANES;
    for seg in plan.segments(band) {
        match src {
            Some(src) => {
                let chunks = src[seg.clone()]
                    .chunks(width)
                    .zip(dst[seg].chunks_mut(width));
                for (g, (xc, yc)) in chunks.enumerate() {
                    let ((xfull, xtail), (yfull, ytail)) = (split(xc), split_mut(yc));
                    for (j, (x, y)) in xfull.iter().zip(yfull).enumerate() {
                        *y = f(g, j, V::new(*x)).to_array();
                    }
                    if !xtail.is_empty() {
                        store_tail(ytail, f(g, xfull.len(), load_tail(xtail, V::ZERO)));
                    }
                }
            }
            None => {
                for (g, yc) in dst[seg].chunks_mut(width).enumerate() {
                    let (yfull, ytail) = split_mut(yc);
                    let j_tail = yfull.len();
                    for (j, y) in yfull.iter_mut().enumerate() {
                        *y = f(g, j, V::new(*y)).to_array();
                    }
                    if !ytail.is_empty() {
                        let v = f(g, j_tail, load_tail(ytail, V::ZERO));
                        store_tail(ytail, v);
                    }
                }
            }
        }
    }
}

/// `dx = (dy·k + ((x − mu)·a + b))·p` per channel over `band`.
pub(crate) fn grad_input(
    dy: &[f32],
    x: &[f32],
    dx: &mut [f32],
    plan: &Plan,
    band: &Band,
    consts: [&[PerChannel<f32>]; 5],
) {
    by_vecs!(band.groups[0], grad_input_nv(dy, x, dx, plan, band, consts))
}

#[inline(never)] // see `by_vecs!`
fn grad_input_nv<const NV: usize>(
    dy: &[f32],
    x: &[f32],
    dx: &mut [f32],
    plan: &Plan,
    band: &Band,
    [k, mu, a, b, p]: [&[PerChannel<f32>]; 5],
) {
    let (kv, muv, av, bv) = (
        patterns::<NV>(band, k),
        patterns::<NV>(band, mu),
        patterns::<NV>(band, a),
        patterns::<NV>(band, b),
    );
    let pv = patterns::<NV>(band, p);
    let f = |g: usize, j: usize, dy: V, x: V| {
        dy.mul_add(kv[g][j], (x - muv[g][j]).mul_add(av[g][j], bv[g][j])) * pv[g][j]
    };
    if let Kind::ChannelsFirst = plan.kind {
        // Runs of `s` values, one per channel of the band, as in [`map`].
        let s = plan.spatial.max(1);
        for seg in plan.segments(band) {
            let runs = dy[seg.clone()]
                .chunks(s)
                .zip(x[seg.clone()].chunks(s))
                .zip(dx[seg].chunks_mut(s));
            for (b, ((dy, x), dx)) in runs.enumerate() {
                zip_run(dy, x, dx, |d, x| f(b, 0, d, x));
            }
        }
        return;
    }
    let width = NV * LANES;
    for seg in plan.segments(band) {
        let chunks = dy[seg.clone()]
            .chunks(width)
            .zip(x[seg.clone()].chunks(width))
            .zip(dx[seg].chunks_mut(width));
        for (g, ((dc, xc), oc)) in chunks.enumerate() {
            let ((dfull, dtail), (xfull, xtail), (ofull, otail)) =
                (split(dc), split(xc), split_mut(oc));
            for (j, ((d, x), o)) in dfull.iter().zip(xfull).zip(ofull).enumerate() {
                *o = f(g, j, V::new(*d), V::new(*x)).to_array();
            }
            if !dtail.is_empty() {
                let j = dfull.len();
                let v = f(g, j, load_tail(dtail, V::ZERO), load_tail(xtail, V::ZERO));
                store_tail(otail, v);
            }
        }
    }
}
