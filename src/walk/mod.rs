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

use crate::lanes::{LANES, V};
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

/// The patterns of `per_group[b]` for every group `b` of `band` (places past its
/// groups repeat the last).
fn patterns<const NV: usize>(band: &Band, per_group: &[PerChannel<f32>]) -> [[V; NV]; BAND] {
    core::array::from_fn(|b| {
        let b = b.min(band.len - 1);
        pattern::<NV>(band.groups[b], &per_group[b])
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

mod map;
mod reduce;

pub(crate) use map::{affine, centered, grad_input};
pub(crate) use reduce::{grad_sums, moments};
