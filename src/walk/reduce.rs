//! Reductions: per-channel sums of a band's values in f32 vector blocks, spilled to f64.

use super::{pattern, Band, Group, Kind, PerChannel, Plan, BAND, BLOCK, MAX_LANES, MAX_VECS};
use crate::lanes::{last_vector, load_tail, split, LANES, V};
use crate::moments::Moments;

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
